"""One rank-generic ResNet (He et al. 2016) with an attention switch in every block.

The same classes build 1D, 2D and 3D networks: layer classes are looked up by
``spatial_dims`` (:mod:`excite.layers.rank`) and the k x k convolutions of a block come
from an injected *conv builder*, so video ResNets (R3D, MC3, R(2+1)D) are this ResNet with
other builders (see :mod:`excite.models.video`).

Attention placement (``attention_position``), after Hu et al., "Squeeze-and-Excitation
Networks", TPAMI 2019, Table 14 / Fig. 5::

    standard            pre                 post                identity
    x ──┬──────┐        x ──┬──────┐        x ──┬──────┐        x ──┬──────┐
        │    convs          │     ATT           │    convs          │     ATT
        │     ATT           │    convs          │      │            │    convs
        └──(+)─┘            └──(+)─┘            └──(+)─┘            └──(+)─┘
          relu                relu                relu                relu
                                                  ATT

"standard" (attention after the last BatchNorm of the residual branch, before the
addition) is where both the SE and the CBAM papers put their modules.

Parameter and state-dict names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``,
``downsample.0``, ``fc``) so torchvision's 2D checkpoints load unchanged; attention
modules live under ``layerS.B.attention`` (or ``layerS.attention`` for a family placed at
the end of each stage). The ResNet-D options of timm's ``resnet*d`` (``stem_type="deep"``,
``shortcut="avgpool"``; He et al., "Bag of Tricks for Image Classification", CVPR 2019)
keep timm's names too (``conv1.0`` … ``conv1.6``, ``downsample.1`` / ``downsample.2``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from excite.checks import check_choice, check_positive_int, check_positive_ints
from excite.layers import fused_residual_relu
from excite.layers.factory import (
    NO_ATTENTION,
    AttentionLike,
    reset_attention,
    resolve_attention,
)
from excite.layers.rank import (
    adaptive_avg_pool_nd,
    batch_norm_nd,
    check_spatial_dims,
    conv_nd,
    max_pool_nd,
    ntuple,
)

__all__ = [
    "ATTENTION_POSITIONS",
    "BasicBlock",
    "Bottleneck",
    "ConvBuilder",
    "Conv3DInflated",
    "ConvNd",
    "PadShortcut",
    "ATTENTION_INITS",
    "ResNet",
    "SHORTCUTS",
    "STEM_TYPES",
    "ScaledAttention",
]

#: shortcut of a block whose shape changes (see :class:`ResNet`)
SHORTCUTS = ("conv", "pad", "avgpool")
#: stem layouts (see :class:`ResNet`)
STEM_TYPES = ("plain", "deep")

_AVG_POOL: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


class ConvBuilder(Protocol):
    """Builds the k x k (x k) convolution of a residual block.

    Called as ``builder(in_channels, out_channels, stride=s, groups=g,
    spatial_dims=d, block_channels=(block_in, planes))``; ``block_channels`` lets a
    factorised builder size its intermediate width from the whole block, as
    torchvision's R(2+1)D does. ``downsample_stride(s, d)`` gives the stride of the
    1 x 1 projection shortcut of a block whose convolution has stride ``s``.
    """

    def __call__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        groups: int,
        spatial_dims: int,
        block_channels: tuple[int, int],
    ) -> nn.Module: ...

    def downsample_stride(self, stride: int, spatial_dims: int) -> tuple[int, ...]: ...


class ConvNd:
    """The plain builder: a 3^d convolution, stride ``s`` on every axis, no bias."""

    def __init__(self, kernel_size: int = 3) -> None:
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive int, got {kernel_size!r}")
        self.kernel_size = kernel_size

    def __call__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        groups: int,
        spatial_dims: int,
        block_channels: tuple[int, int],
    ) -> nn.Module:
        del block_channels  # the plain convolution needs no intermediate width
        return conv_nd(spatial_dims)(
            in_channels,
            out_channels,
            kernel_size=self.kernel_size,
            stride=stride,
            padding=self.kernel_size // 2,
            groups=groups,
            bias=False,
        )

    def downsample_stride(self, stride: int, spatial_dims: int) -> tuple[int, ...]:
        return (stride,) * spatial_dims

    def __repr__(self) -> str:
        return f"ConvNd(kernel_size={self.kernel_size})"


class Conv3DInflated:
    """Builder of a t x k x k convolution with stride (1, s, s): I3D's inflated k x k.

    Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017: a 2D network's
    k x k filters become t x k x k; the temporal axis keeps its length (stride 1,
    padding t // 2), so a clip of identical frames gives every frame the 2D features
    (:func:`excite.inflate`). ``time_kernel=1`` is MC3's space-only convolution.

    Args:
        time_kernel: t, odd >= 1.
        kernel_size: k, odd >= 1 (the 2D kernel).
    """

    def __init__(self, time_kernel: int = 3, kernel_size: int = 3) -> None:
        for name, value in (("time_kernel", time_kernel), ("kernel_size", kernel_size)):
            check_positive_int(value, name=name)
            if value % 2 == 0:
                raise ValueError(f"{name} must be odd (for 'same' padding), got {value!r}")
        self.time_kernel = time_kernel
        self.kernel_size = kernel_size

    def __call__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        groups: int,
        spatial_dims: int,
        block_channels: tuple[int, int],
    ) -> nn.Module:
        del block_channels
        if spatial_dims != 3:
            raise ValueError(f"Conv3DInflated needs spatial_dims=3, got {spatial_dims!r}")
        t, k = self.time_kernel, self.kernel_size
        return nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(t, k, k),
            stride=(1, stride, stride),
            padding=(t // 2, k // 2, k // 2),
            groups=groups,
            bias=False,
        )

    def downsample_stride(self, stride: int, spatial_dims: int) -> tuple[int, ...]:
        return (1, stride, stride)

    def __repr__(self) -> str:
        return f"Conv3DInflated(time_kernel={self.time_kernel}, kernel_size={self.kernel_size})"


class PadShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride`` and zero-pad the new channels.

    He et al. 2016's option (A), used by their CIFAR ResNets: ``x[:, :, ::s, ::s]``
    followed by ``extra_channels`` zero channels (half before, half after, the common
    reading of "extra zero entries padded for increasing dimensions").

    Args:
        stride: s on every spatial axis, or one stride per axis (e.g. (1, 2, 2) for a
            clip whose convolutions do not stride in time).
        extra_channels: zero channels added.
    """

    def __init__(self, stride: int | Sequence[int], extra_channels: int) -> None:
        super().__init__()
        self.stride = stride if isinstance(stride, int) else tuple(stride)
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strides = ntuple(self.stride, x.ndim - 2, name="stride")
        if any(s > 1 for s in strides):
            x = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)]
        if self.extra_channels:
            before = self.extra_channels // 2
            after = self.extra_channels - before
            x = nn.functional.pad(x, (0, 0) * (x.ndim - 2) + (before, after))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


ATTENTION_POSITIONS = ("standard", "pre", "post", "identity")


def _check_position(attention_position: str) -> str:
    if attention_position not in ATTENTION_POSITIONS:
        raise ValueError(
            f"attention_position must be one of {ATTENTION_POSITIONS}, got {attention_position!r}"
        )
    return attention_position


#: how attention starts (see :class:`ScaledAttention`)
ATTENTION_INITS = ("default", "identity")


class ScaledAttention(nn.Module):
    """Attention blended in by a learnable scalar: ``y = x + alpha * (module(x) - x)``.

    With ``alpha = 0`` (the default) the output is exactly ``x``: a network that gets this
    module computes what it computed without attention, and training moves ``alpha``
    away from 0 (at ``alpha = 0`` only ``alpha`` itself has a non-zero gradient,
    ``dL/dalpha = <dL/dy, module(x) - x>``; the attention's own parameters start
    learning once ``alpha != 0``). ``alpha = 1`` is the plain ``module(x)``. Works for any
    attention module that keeps the input's shape. Used by ``attention_init="identity"``
    and :func:`excite.attach_attention` with ``init="identity"``.

    Args:
        module: the attention module (its state-dict keys sit under ``module.``).
        alpha: the initial scale.

    Attributes:
        alpha: the scale, a 0-dim ``nn.Parameter``.
    """

    def __init__(self, module: nn.Module, *, alpha: float = 0.0) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {module!r}")
        self.module = module
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.alpha * (self.module(x) - x)


class _ResidualBlock(nn.Module):
    """Shared forward of the two ResNet blocks: residual branch, attention, addition."""

    expansion = 1
    attention_position: str
    downsample: nn.Module | None
    attention: nn.Module

    def _attention_channels(self, in_channels: int, out_channels: int) -> int:
        return in_channels if self.attention_position == "pre" else out_channels

    def residual(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        position = self.attention_position
        out = self.residual(self.attention(x) if position == "pre" else x)
        identity = x if self.downsample is None else self.downsample(x)
        if position == "standard":
            # at inference the attention's native kernel can end the block in its own pass
            fused = fused_residual_relu(self.attention, out, identity)
            if fused is not None:
                return fused
            out = self.attention(out)
        if position == "identity":
            identity = self.attention(identity)
        out = self.relu(out + identity)
        if position == "post":
            out = self.attention(out)
        return out


class BasicBlock(_ResidualBlock):
    """Two k x k convolutions with BatchNorm (He et al. 2016, Fig. 2 left)::

        x ─┬─ conv1 (stride) ─ bn1 ─ relu ─ conv2 ─ bn2 ─ [attention] ─(+)─ relu ─ out
           └──────────────── identity / downsample(x) ─────────────────┘

    Args:
        in_channels: channels of the block input.
        planes: channels of both convolutions; the output has ``planes`` channels.
        stride: stride of ``conv1`` (and of the projection shortcut).
        downsample: shortcut module, or None for the identity.
        spatial_dims: rank d of the (N, C, *spatial) input.
        conv_builder: builds the k x k convolutions (:class:`ConvNd` by default).
        groups, base_width: must be 1 and 64 (ResNeXt widths need :class:`Bottleneck`).
        stride_in_1x1: ignored (a basic block has no 1 x 1 convolution).
        attention, attention_kwargs, attention_position: see :class:`ResNet`.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 2,
        conv_builder: ConvBuilder | None = None,
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        attention: AttentionLike = None,
        attention_kwargs: Mapping[str, Any] | None = None,
        attention_position: str = "standard",
    ) -> None:
        super().__init__()
        del stride_in_1x1
        factory = resolve_attention(attention, attention_kwargs)
        if groups != 1 or base_width != 64:
            raise ValueError(
                f"BasicBlock supports only groups=1 and base_width=64, got groups={groups}, "
                f"base_width={base_width}; use the Bottleneck block for ResNeXt widths"
            )
        builder = conv_builder if conv_builder is not None else ConvNd()
        norm = batch_norm_nd(spatial_dims)
        self.attention_position = _check_position(attention_position)
        block_channels = (in_channels, planes)
        self.conv1 = builder(
            in_channels, planes, stride=stride, groups=1, spatial_dims=spatial_dims,
            block_channels=block_channels,
        )
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = builder(
            planes, planes, stride=1, groups=1, spatial_dims=spatial_dims,
            block_channels=block_channels,
        )
        self.bn2 = norm(planes)
        self.attention = factory(
            self._attention_channels(in_channels, planes), spatial_dims=spatial_dims
        )
        self.downsample = downsample
        self.stride = stride

    @property
    def last_norm(self) -> nn.Module:
        """The BatchNorm that ends the residual branch (zeroed by zero_init_residual)."""
        return self.bn2

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(_ResidualBlock):
    """1 x 1 → k x k (grouped) → 1 x 1 bottleneck (He et al. 2016; Xie et al. 2017)::

        x ─┬─ conv1 1x1 ─ bn1 ─ relu ─ conv2 kxk/g ─ bn2 ─ relu ─ conv3 1x1 ─ bn3
           │                                                  ─ [attention] ─(+)─ relu
           └──────────────── identity / downsample(x) ─────────────────────────┘

    The inner width is ``int(planes * base_width / 64) * groups`` (ResNeXt's C x d) and
    the output has ``planes * 4`` channels.

    Args:
        in_channels: channels of the block input.
        planes: base width of the stage (64, 128, 256, 512 in ResNet-50).
        stride: the block's stride; on the 1 x 1 ``conv1`` when ``stride_in_1x1`` (the
            original Caffe ResNet, whose FLOPs the SE and CBAM papers report) else on
            the k x k ``conv2`` (torchvision's "ResNet v1.5").
        downsample: shortcut module, or None for the identity.
        spatial_dims: rank d of the (N, C, *spatial) input.
        conv_builder: builds the k x k convolution (:class:`ConvNd` by default).
        groups: cardinality C of ResNeXt (groups of ``conv2``).
        base_width: width d of each group for ``planes == 64``.
        attention, attention_kwargs, attention_position: see :class:`ResNet`.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 2,
        conv_builder: ConvBuilder | None = None,
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        attention: AttentionLike = None,
        attention_kwargs: Mapping[str, Any] | None = None,
        attention_position: str = "standard",
    ) -> None:
        super().__init__()
        factory = resolve_attention(attention, attention_kwargs)
        builder = conv_builder if conv_builder is not None else ConvNd()
        conv = conv_nd(spatial_dims)
        norm = batch_norm_nd(spatial_dims)
        self.attention_position = _check_position(attention_position)
        width = int(planes * (base_width / 64.0)) * groups
        out_channels = planes * self.expansion
        stride_1x1, stride_kxk = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv(
            in_channels, width, kernel_size=1,
            stride=builder.downsample_stride(stride_1x1, spatial_dims), bias=False,
        )
        self.bn1 = norm(width)
        self.conv2 = builder(
            width, width, stride=stride_kxk, groups=groups, spatial_dims=spatial_dims,
            block_channels=(in_channels, planes),
        )
        self.bn2 = norm(width)
        self.conv3 = conv(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.attention = factory(
            self._attention_channels(in_channels, out_channels), spatial_dims=spatial_dims
        )
        self.downsample = downsample
        self.stride = stride

    @property
    def last_norm(self) -> nn.Module:
        """The BatchNorm that ends the residual branch (zeroed by zero_init_residual)."""
        return self.bn3

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


StemConv = Callable[[int, int, int], nn.Module]
"""``stem_conv(in_channels, out_channels, spatial_dims) -> module`` for a custom stem."""


def _shortcut(
    kind: str, in_channels: int, out_channels: int, stride: tuple[int, ...], spatial_dims: int
) -> nn.Module:
    """The shortcut of a block that changes shape (``ResNet(shortcut=kind)``)."""
    if kind == "pad":
        return PadShortcut(stride, out_channels - in_channels)
    conv = conv_nd(spatial_dims)
    norm = batch_norm_nd(spatial_dims)
    if kind == "avgpool":
        pool: nn.Module = (
            _AVG_POOL[spatial_dims](
                kernel_size=tuple(2 if s > 1 else 1 for s in stride), stride=stride,
                ceil_mode=True, count_include_pad=False,
            )
            if any(s > 1 for s in stride)
            else nn.Identity()
        )
        return nn.Sequential(
            pool, conv(in_channels, out_channels, kernel_size=1, bias=False), norm(out_channels)
        )
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        norm(out_channels),
    )


def _time_kernels(time_kernel: int | Mapping[str, int], num_stages: int) -> tuple[int, list[int]]:
    """``time_kernel`` (an int or a mapping) -> (stem t, [t of each stage])."""
    stage_keys = [f"layer{i}" for i in range(1, num_stages + 1)]
    if isinstance(time_kernel, Mapping):
        allowed = ["stem", *stage_keys, "*"]
        unknown = sorted(str(k) for k in time_kernel if k not in allowed)
        if unknown:
            raise ValueError(
                f"time_kernel keys must be among {allowed}, got {unknown} in {dict(time_kernel)!r}"
            )
        default = time_kernel.get("*", 3)
        values = {key: time_kernel.get(key, default) for key in ["stem", *stage_keys]}
    else:
        values = {key: time_kernel for key in ["stem", *stage_keys]}
    for key, t in values.items():
        check_positive_int(t, name=f"time_kernel[{key!r}]")
        if t % 2 == 0:
            raise ValueError(f"time_kernel must be odd (for 'same' padding), got {t} for {key!r}")
    return values["stem"], [values[key] for key in stage_keys]


def _spatial_pair(value: Any, name: str) -> tuple[int, ...]:
    """With ``time_kernel``, a stem / pool setting names the two spatial axes only."""
    if isinstance(value, (tuple, list)) and len(value) != 2:
        raise ValueError(
            f"with time_kernel, {name} gives the two spatial axes (an int or 2 ints; time is "
            f"set by time_kernel), got {tuple(value)!r}"
        )
    return ntuple(value, 2, name=name)


def _inflated(builder: Any, time_kernel: int) -> ConvBuilder:
    """The I3D twin of a plain :class:`ConvNd` builder."""
    if type(builder) is not ConvNd or not isinstance(builder.kernel_size, int):
        raise ValueError(
            f"time_kernel needs the plain ConvNd conv builders, got {builder!r}"
        )
    return Conv3DInflated(time_kernel, builder.kernel_size)


class ResNet(nn.Module):
    """Rank-generic ResNet / ResNeXt / wide ResNet with an attention switch.

    Layout (torchvision names)::

        x (N, C_in, *spatial)
        → conv1 → bn1 → relu → maxpool                    stem
        → layer1 … layerS                                 stages of residual blocks
        → avgpool → flatten → fc                          (N, num_classes)

    With ``stem_type="deep"`` (ResNet-C/D, timm's ``resnet*d``) ``conv1`` is three
    k x k convolutions, widths stem_channels/2, stem_channels/2, stem_channels, the first
    with the stem stride, BatchNorm + ReLU between them (``conv1.0`` … ``conv1.6``).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        num_classes: outputs of ``fc``.
        in_channels: channels of the input.
        spatial_dims: rank d of the input (1 signals, 2 images, 3 volumes / clips).
        widths: ``planes`` of each stage (the block multiplies by its expansion).
        strides: stride of each stage's first block; default 1 then 2s.
        stem_channels: output channels of the stem.
        stem_type: "plain" (one convolution, 7 x 7 by default) or "deep" (three 3 x 3 by
            default, see above).
        stem_kernel_size, stem_stride, stem_padding: int (cubic) or d-tuples for the
            stem convolution(s); the kernel defaults to 7 ("plain") or 3 ("deep"), the
            padding to ``kernel // 2``; the stride applies to the first convolution.
        stem_pool: max-pool after the stem (ImageNet ResNets).
        stem_pool_kernel_size, stem_pool_stride: int or d-tuples for that max-pool
            (3 and 2; padding ``kernel // 2``).
        stem_conv: custom stem convolution ``f(in_channels, stem_channels, d)``
            (replaces kernel/stride/padding; R(2+1)D's factorised stem).
        conv_builder: one :class:`ConvBuilder` or one per stage, for the blocks' k x k
            convolutions.
        groups, base_width: ResNeXt cardinality C and group width d (Bottleneck only).
        shortcut: where a block changes shape, "conv" (1 x 1 projection + BatchNorm,
            option B), "pad" (parameter-free subsample + zero padding, option A) or
            "avgpool" (ResNet-D: average-pool 2^d with the stride, ``ceil_mode``, padding
            not counted, then 1 x 1 convolution + BatchNorm: ``downsample.1`` / ``.2``).
        stride_in_1x1: put a Bottleneck's stride on its first 1 x 1 convolution.
        attention: which attention: a name ("se", "cbam", …), an ``nn.Module`` class,
            an :class:`~excite.layers.AttentionFactory`, or None / "none" (no attention);
            resolved once here by :func:`excite.layers.resolve_attention`. A family whose
            ``placement`` is "block" goes in every residual block (at
            ``attention_position``), a "stage" family once after each stage's last block
            (``layerS.attention``). After the weight init below, each attention module's
            own ``reset_parameters`` runs (e.g. the official CBAM's zero BatchNorm).
        attention_kwargs: options merged into the factory (every attention module).
        attention_position: "standard", "pre", "post" or "identity" (module docstring).
        attention_stages: 1-based stages that get attention (default: all).
        attention_init: "default" (each module's own init) or "identity": every
            attention module is wrapped in :class:`ScaledAttention` with alpha = 0, so
            the network starts computing exactly what it does without attention (keys
            ``…attention.module.*`` and ``…attention.alpha``; the layout of
            :func:`excite.attach_attention` with ``init="identity"``).
        time_kernel: 3D only, I3D's layout (Carreira & Zisserman 2017), the target of
            :func:`excite.inflate`: every k x k convolution becomes t x k x k and nothing
            strides in time (stem t x k x k with stride (1, s, s), max-pool 1 x 3 x 3
            with stride (1, 2, 2), blocks and shortcuts stride (1, s, s)); the stem and
            pool settings are then given for the two spatial axes. An odd int t, or a
            mapping with keys "stem", "layer1" … "layerS" and "*" (the rest, default 3).
            Needs the plain :class:`ConvNd` builders.
        zero_init_residual: zero the last BatchNorm weight of every residual branch.
        fc_init_std: if given, ``fc.weight ~ N(0, std)`` and zero bias (video ResNets use
            0.01); else PyTorch's default Linear init.

    Attributes:
        build_options: the resolved constructor arguments (``attention`` as a factory);
            ``ResNet(**build_options)`` builds the same architecture, and
            :func:`excite.inflate` builds its 3D twin from them.

    Raises:
        ValueError / TypeError: an argument outside what is allowed (message names it).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        spatial_dims: int = 2,
        widths: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[int] | None = None,
        stem_channels: int = 64,
        stem_type: str = "plain",
        stem_kernel_size: int | Sequence[int] | None = None,
        stem_stride: int | Sequence[int] = 2,
        stem_padding: int | Sequence[int] | None = None,
        stem_pool: bool = True,
        stem_pool_kernel_size: int | Sequence[int] = 3,
        stem_pool_stride: int | Sequence[int] = 2,
        stem_conv: StemConv | None = None,
        conv_builder: ConvBuilder | Sequence[ConvBuilder] | None = None,
        groups: int = 1,
        base_width: int = 64,
        shortcut: str = "conv",
        stride_in_1x1: bool = False,
        attention: AttentionLike = None,
        attention_kwargs: Mapping[str, Any] | None = None,
        attention_position: str = "standard",
        attention_stages: Sequence[int] | None = None,
        attention_init: str = "default",
        time_kernel: int | Mapping[str, int] | None = None,
        zero_init_residual: bool = False,
        fc_init_std: float | None = None,
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        if block not in (BasicBlock, Bottleneck):
            raise TypeError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        layers = check_positive_ints(layers, name="layers")
        widths = check_positive_ints(widths, name="widths")
        if len(widths) != len(layers):
            raise ValueError(
                f"widths must have one entry per stage ({len(layers)} stages from "
                f"layers={layers}), got widths={widths}"
            )
        strides = (
            (1,) + (2,) * (len(layers) - 1)
            if strides is None
            else check_positive_ints(strides, name="strides")
        )
        if len(strides) != len(layers):
            raise ValueError(
                f"strides must have one entry per stage ({len(layers)}), got {strides}"
            )
        num_classes = check_positive_int(num_classes, name="num_classes")
        in_channels = check_positive_int(in_channels, name="in_channels")
        stem_channels = check_positive_int(stem_channels, name="stem_channels")
        groups = check_positive_int(groups, name="groups")
        base_width = check_positive_int(base_width, name="base_width")
        check_choice(shortcut, SHORTCUTS, name="shortcut")
        check_choice(stem_type, STEM_TYPES, name="stem_type")
        if stem_type == "deep" and (stem_conv is not None or stem_channels % 2):
            raise ValueError(
                "stem_type='deep' needs an even stem_channels (its first two convolutions "
                f"are stem_channels / 2 wide) and no stem_conv, got stem_channels="
                f"{stem_channels}, stem_conv={stem_conv!r}"
            )
        factory = resolve_attention(attention, attention_kwargs)
        _check_position(attention_position)
        if attention_stages is None:
            stages_with_attention = set(range(1, len(layers) + 1))
        else:
            stages_with_attention = set(check_positive_ints(attention_stages, name="attention_stages"))
            bad = sorted(s for s in stages_with_attention if s > len(layers))
            if bad:
                raise ValueError(
                    f"attention_stages are numbered 1..{len(layers)} for this network, "
                    f"got {tuple(attention_stages)!r}"
                )
        if conv_builder is None or not isinstance(conv_builder, Sequence):
            builders: tuple[Any, ...] = (conv_builder or ConvNd(),) * len(layers)
        else:
            builders = tuple(conv_builder)
            if len(builders) != len(layers):
                raise ValueError(
                    f"conv_builder must be one builder or one per stage ({len(layers)}), "
                    f"got {len(builders)}"
                )
        if stem_kernel_size is None:
            stem_kernel_size = 3 if stem_type == "deep" else 7
        check_choice(attention_init, ATTENTION_INITS, name="attention_init")

        self.build_options: dict[str, Any] = {
            "block": block, "layers": layers, "num_classes": num_classes,
            "in_channels": in_channels, "spatial_dims": spatial_dims, "widths": widths,
            "strides": strides, "stem_channels": stem_channels, "stem_type": stem_type,
            "stem_kernel_size": stem_kernel_size, "stem_stride": stem_stride,
            "stem_padding": stem_padding, "stem_pool": stem_pool,
            "stem_pool_kernel_size": stem_pool_kernel_size,
            "stem_pool_stride": stem_pool_stride, "stem_conv": stem_conv,
            "conv_builder": builders, "groups": groups, "base_width": base_width,
            "shortcut": shortcut, "stride_in_1x1": stride_in_1x1, "attention": factory,
            "attention_position": attention_position,
            "attention_stages": tuple(sorted(stages_with_attention)),
            "attention_init": attention_init, "time_kernel": time_kernel,
            "zero_init_residual": zero_init_residual, "fc_init_std": fc_init_std,
        }
        if time_kernel is not None:  # I3D layout: (t, k, k) kernels, no temporal stride
            if spatial_dims != 3:
                raise ValueError(
                    f"time_kernel is for 3D models (I3D layout), got spatial_dims={spatial_dims}"
                )
            if stem_conv is not None:
                raise ValueError("time_kernel cannot be combined with a custom stem_conv")
            t_stem, t_stages = _time_kernels(time_kernel, len(layers))
            stem_kernel_size = (t_stem, *_spatial_pair(stem_kernel_size, "stem_kernel_size"))
            stem_stride = (1, *_spatial_pair(stem_stride, "stem_stride"))
            if stem_padding is not None:
                stem_padding = (t_stem // 2, *_spatial_pair(stem_padding, "stem_padding"))
            stem_pool_kernel_size = (1, *_spatial_pair(stem_pool_kernel_size, "stem_pool_kernel_size"))
            stem_pool_stride = (1, *_spatial_pair(stem_pool_stride, "stem_pool_stride"))
            builders = tuple(_inflated(b, t) for b, t in zip(builders, t_stages))
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.attention_factory = factory
        self.attention_name = None if factory.is_none else factory.name
        self.attention_position = attention_position
        self.attention_stages = tuple(sorted(stages_with_attention))

        # stem: torchvision's conv1 / bn1 / relu / maxpool
        conv = conv_nd(spatial_dims)
        norm = batch_norm_nd(spatial_dims)
        if stem_conv is not None:
            self.conv1 = stem_conv(in_channels, stem_channels, spatial_dims)
        else:
            kernel = ntuple(stem_kernel_size, spatial_dims, name="stem_kernel_size")
            padding = (
                tuple(k // 2 for k in kernel)
                if stem_padding is None
                else ntuple(stem_padding, spatial_dims, name="stem_padding")
            )
            stride = ntuple(stem_stride, spatial_dims, name="stem_stride")
            if stem_type == "deep":
                half = stem_channels // 2
                self.conv1 = nn.Sequential(
                    conv(in_channels, half, kernel, stride=stride, padding=padding, bias=False),
                    norm(half),
                    nn.ReLU(inplace=True),
                    conv(half, half, kernel, padding=padding, bias=False),
                    norm(half),
                    nn.ReLU(inplace=True),
                    conv(half, stem_channels, kernel, padding=padding, bias=False),
                )
            else:
                self.conv1 = conv(
                    in_channels, stem_channels, kernel_size=kernel, stride=stride,
                    padding=padding, bias=False,
                )
        self.bn1 = norm(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        if stem_pool:
            pool_kernel = ntuple(stem_pool_kernel_size, spatial_dims, name="stem_pool_kernel_size")
            self.maxpool: nn.Module = max_pool_nd(spatial_dims)(
                kernel_size=pool_kernel,
                stride=ntuple(stem_pool_stride, spatial_dims, name="stem_pool_stride"),
                padding=tuple(k // 2 for k in pool_kernel),
            )
        else:
            self.maxpool = nn.Identity()

        # a "block" family goes in every residual block, a "stage" family once at the
        # end of each stage (under ``layerS.attention``)
        per_stage = factory.placement == "stage"
        attention_modules: list[nn.Module] = []
        channels = stem_channels
        for index, (depth, width, stride, builder) in enumerate(
            zip(layers, widths, strides, builders), start=1
        ):
            stage_factory = factory if index in stages_with_attention else NO_ATTENTION
            block_factory = NO_ATTENTION if per_stage else stage_factory
            blocks: list[tuple[str, nn.Module]] = []
            for b in range(depth):
                block_stride = stride if b == 0 else 1
                out_channels = width * block.expansion
                downsample: nn.Module | None = None
                if block_stride != 1 or channels != out_channels:
                    downsample = _shortcut(
                        shortcut, channels, out_channels,
                        builder.downsample_stride(block_stride, spatial_dims), spatial_dims,
                    )
                unit = block(
                    channels,
                    width,
                    stride=block_stride,
                    downsample=downsample,
                    spatial_dims=spatial_dims,
                    conv_builder=builder,
                    groups=groups,
                    base_width=base_width,
                    stride_in_1x1=stride_in_1x1,
                    attention=block_factory,
                    attention_position=attention_position,
                )
                attention_modules.append(unit.attention)
                blocks.append((str(b), unit))
                channels = out_channels
            if per_stage and not stage_factory.is_none:
                stage_attention = stage_factory(channels, spatial_dims=spatial_dims)
                attention_modules.append(stage_attention)
                blocks.append(("attention", stage_attention))
            self.add_module(f"layer{index}", nn.Sequential(OrderedDict(blocks)))
        self.num_stages = len(layers)
        self.num_features = channels
        self.avgpool = adaptive_avg_pool_nd(spatial_dims)(1)
        self.fc = nn.Linear(channels, num_classes)

        self._init_weights(zero_init_residual=zero_init_residual, fc_init_std=fc_init_std)
        for module in attention_modules:  # each family's own init wins over the loop above
            reset_attention(module)
        if attention_init == "identity":
            for owner in (*self.modules(),):
                current = owner._modules.get("attention")
                if isinstance(owner, (_ResidualBlock, nn.Sequential)) and current is not None \
                        and not isinstance(current, (nn.Identity, ScaledAttention)):
                    owner.attention = ScaledAttention(current)

    def stages(self) -> list[nn.Sequential]:
        """``[layer1, …, layerS]``."""
        return [getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)]

    def _init_weights(self, *, zero_init_residual: bool, fc_init_std: float | None) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if fc_init_std is not None:
            nn.init.normal_(self.fc.weight, 0.0, fc_init_std)
            nn.init.zeros_(self.fc.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_norm.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: (N, C_in, *spatial) → (N, num_features, *spatial / 32)."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{type(self).__name__} with spatial_dims={self.spatial_dims} expects input "
                f"of shape (N, {self.in_channels}, {_spatial_names(self.spatial_dims)}), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects {self.in_channels} input channels, got "
                f"input of shape {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, *spatial) → logits (N, num_classes)."""
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


def _spatial_names(spatial_dims: int) -> str:
    return {1: "L", 2: "H, W", 3: "T, H, W"}[spatial_dims]
