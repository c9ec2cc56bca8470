"""CBAM (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018).

:class:`ChannelAttention` is the paper's channel module M_c, :class:`SpatialAttention`
its spatial module M_s, and :class:`CBAM` chains them in any of the three arrangements
the paper compares. ``variant="official"`` reproduces the authors' released code
(MLP biases, [max, mean] maps, BatchNorm after the spatial convolution) so its
checkpoints load after renaming keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from excite import kernels
from excite.kernels import activation_name, unchecked

from ._common import (
    ChannelMLP,
    check_bool,
    check_channels,
    check_choice,
    check_input,
    check_kernel_size,
    check_number,
    check_optional_impl,
    check_pools,
    check_reduction,
    hidden_width,
    resolve_activation,
)
from .rank import batch_norm_nd, check_spatial_dims, conv_nd, stable_mean
from .registry import register_attention

POOLS = ("avg", "max")
ARRANGEMENTS = ("channel-spatial", "spatial-channel", "parallel")
VARIANTS = ("paper", "official")

_BatchNorm = nn.modules.batchnorm._BatchNorm

#: the spatial module's fused-path arguments: (gate name, scale, shift)
_SpatialArgs = tuple[str, "torch.Tensor | None", "torch.Tensor | None"]


def _channel_avg(x: torch.Tensor) -> torch.Tensor:
    return stable_mean(x, 1, keepdim=True)


def _channel_max(x: torch.Tensor) -> torch.Tensor:
    return x.amax(1, keepdim=True)


# pool name -> (N, C, *spatial) -> (N, 1, *spatial): maps for the spatial module
_CHANNEL_POOLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "avg": _channel_avg,
    "max": _channel_max,
}


def _init_norm(norm: nn.Module, gamma: float) -> None:
    """Set an affine BatchNorm's gamma to ``gamma`` and beta to 0 (no-op for Identity)."""
    if isinstance(norm, _BatchNorm) and norm.affine:
        nn.init.constant_(norm.weight, gamma)
        nn.init.zeros_(norm.bias)


def _norm_affine(norm: nn.Module) -> tuple[bool, torch.Tensor | None, torch.Tensor | None]:
    """(supported, scale, shift) of the spatial module's optional norm for the fused paths.

    ``nn.Identity`` -> no affine. A BatchNorm using running statistics (eval mode, or
    ``track_running_stats`` with the stats present and not training) is the affine
    ``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``, built with
    autograd ops so gamma and beta still receive gradients. A training-mode BatchNorm
    (batch statistics) has no fused form.
    """
    if type(norm) is nn.Identity:
        return True, None, None
    if isinstance(norm, _BatchNorm):
        if norm.training or norm.running_mean is None or norm.running_var is None:
            return False, None, None
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = norm.weight * scale
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = norm.bias + shift
        return True, scale, shift
    return False, None, None


@register_attention("cam")
class ChannelAttention(ChannelMLP):
    """CBAM's channel attention module M_c (Woo et al. 2018, eq. 2).

    ``M_c(F) = sigma(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` with one MLP shared by all
    pooled descriptors, ``MLP(z) = W1 delta(W0 z)``, W0 in R^{C/r x C}, W1 in R^{C x C/r}::

        x ──┬─────────────────────────────────────────────── ⊙ ── y
            ├─ avg ─┐                                         │
            └─ max ─┴─ fc1 (C→C/r) ─ act ─ fc2 (C/r→C) ─ Σ ─ gate

    Args:
        channels: C, the input channels.
        reduction: r; the hidden width is ``channels // reduction``.
        pools: the pooled descriptors, "avg" and/or "max" (a name or a tuple).
        bias: biases in the MLP (the paper has none; the official code has them).
        activation: delta, a name ("relu", ...) or an ``nn.Module`` class.
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.
        impl: how ``forward`` runs: "auto", "reference", "fused", "native" or "triton" (see
            :mod:`excite.kernels`); None follows ``excite.kernels.set_default_impl``.
            Not part of the state dict.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a non-positive channels/reduction, a hidden width of 0, or an
            unknown pool/activation name.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: float = 16,
        pools: str | tuple[str, ...] = ("avg", "max"),
        bias: bool = False,
        activation: str | type[nn.Module] = "relu",
        gate: str | type[nn.Module] = "sigmoid",
        impl: str | None = None,
    ) -> None:
        impl = check_optional_impl(impl)
        check_channels(channels)
        check_reduction(reduction)
        hidden = hidden_width(channels, reduction, module="ChannelAttention")
        super().__init__(
            channels, hidden, pools=check_pools(pools, POOLS), bias=bias,
            activation=activation, gate=gate, impl=impl,
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel map M_c, shape (N, C, 1, ..., 1), for input (N, C, *spatial)."""
        self._check(x)
        return self._gate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        self._check(x)
        return self._run(x)


@register_attention("sam")
class SpatialAttention(nn.Module):
    """CBAM's spatial attention module M_s (Woo et al. 2018, eq. 3).

    ``M_s(F) = sigma(f^{k^d}([AvgPool_c(F); MaxPool_c(F)]))``: channel-wise mean and max
    maps, concatenated, one k^d convolution (2→1 channels, no bias, "same" padding),
    optional BatchNorm, gate::

        x ──┬───────────────────────────────────────── ⊙ ── y
            ├─ mean_c ─┐                                │
            └─ max_c ──┴─ cat ─ conv k^d (2→1) ─ norm ─ gate

    Works on any channel count; ``channels`` (optional) is only checked against the input.

    Args:
        channels: C, checked against the input when given; None accepts any C.
        spatial_dims: d, 1, 2 or 3 (the rank of the convolution).
        kernel_size: k, an odd int >= 1 or a tuple of d odd ints (e.g. (3, 7, 7)).
        norm: BatchNorm after the convolution (the official code's ``BasicConv``);
            the paper has none.
        norm_momentum: that BatchNorm's momentum: 0.01 in the official code, 0.1 in
            timm's CBAM (PyTorch's default). Unused without ``norm``.
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.
        pools: the channel-wise maps in concatenation order: ("avg", "max") in the
            paper, ("max", "avg") in the official code; a single pool also works.
        impl: how ``forward`` runs: "auto", "reference", "fused", "native" or "triton" (see
            :mod:`excite.kernels`); None follows ``excite.kernels.set_default_impl``.
            Not part of the state dict.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/spatial_dims, an even or non-positive kernel_size,
            a norm_momentum outside [0, 1], or an unknown pool/gate name.
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        spatial_dims: int = 2,
        kernel_size: int | tuple[int, ...] = 7,
        norm: bool = False,
        norm_momentum: float = 0.01,
        gate: str | type[nn.Module] = "sigmoid",
        pools: str | tuple[str, ...] = ("avg", "max"),
        impl: str | None = None,
    ) -> None:
        super().__init__()
        self.impl = check_optional_impl(impl)
        self.channels = None if channels is None else check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.kernel_size = check_kernel_size(kernel_size, spatial_dims)
        self.pools = check_pools(pools, POOLS)
        check_bool(norm, name="norm")
        check_number(norm_momentum, name="norm_momentum", minimum=0, maximum=1)
        padding = tuple(k // 2 for k in self.kernel_size)
        self.conv = conv_nd(spatial_dims)(
            len(self.pools), 1, self.kernel_size, padding=padding, bias=False
        )
        self.norm = batch_norm_nd(spatial_dims)(1, momentum=norm_momentum) if norm else nn.Identity()
        self.gate_act = resolve_activation(gate, name="gate")

    def reset_parameters(self) -> None:
        """PyTorch's BatchNorm init for the optional norm: gamma = 1, beta = 0 (as timm's
        CBAM starts); without ``norm`` nothing changes.

        excite's models call this after their own weight initialisation (the
        convolution keeps the model's Kaiming init). The official code's zero-initialised
        BatchNorm belongs to ``CBAM(variant="official")`` (see :meth:`CBAM.reset_parameters`).
        """
        _init_norm(self.norm, 1.0)

    def _check(self, x: torch.Tensor) -> None:
        check_input(
            x, module="SpatialAttention", channels=self.channels, ndim=self.spatial_dims + 2,
            dtype=self.conv.weight.dtype,
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial map M_s, shape (N, 1, *spatial), for input (N, C, *spatial)."""
        self._check(x)
        return self._gate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        self._check(x)
        args = self._kernel_args()
        return self._forward_with(x, kernels.resolve_impl(self.impl, x, supported=args is not None), args)

    def residual_relu(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor | None:
        """``relu(self(x) + identity)`` in the block's one native pass, or None where that
        does not apply (see :func:`~excite.layers.fused_residual_relu`)."""
        self._check(x)
        args = self._kernel_args()
        if args is None or kernels.resolve_impl(self.impl, x) != "native":
            return None
        gate, scale, shift = args
        conv = (self.conv.weight, scale, shift, self.pools)
        return unchecked.residual_relu(x, identity, mlp=None, conv=conv, gate=gate)

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`gate` without the input check."""
        maps = torch.cat([_CHANNEL_POOLS[pool](x) for pool in self.pools], dim=1)
        return self.gate_act(self.norm(self.conv(maps)))

    def _kernel_args(self) -> _SpatialArgs | None:
        """(gate name, scale, shift) for the kernels, or None without a fused form (a
        custom gate class, a training-mode BatchNorm)."""
        modules = self._modules  # one dict, not two nn.Module attribute look-ups per call
        gate = activation_name(modules["gate_act"])
        ok, scale, shift = _norm_affine(modules["norm"])
        return (gate, scale, shift) if ok and gate is not None else None

    def _forward_with(self, x: torch.Tensor, which: str, args: _SpatialArgs | None) -> torch.Tensor:
        """``x * M_s(x)`` on the implementation ``which`` (already resolved for ``args``)."""
        if which == "reference" or args is None:
            return x * self._gate(x)
        gate, scale, shift = args
        return unchecked.spatial_attention(
            x, self.conv.weight, pools=self.pools, gate=gate, scale=scale, shift=shift, impl=which
        )


@register_attention("cbam")
class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018, eq. 1).

    ``arrangement="channel-spatial"`` (the paper's default): ``F' = M_c(F) ⊙ F``,
    ``F'' = M_s(F') ⊙ F'``. ``"spatial-channel"`` applies M_s first;
    ``"parallel"`` computes both maps from F: ``F'' = F ⊙ M_c(F) ⊙ M_s(F)``::

        x ── channel (M_c) ── spatial (M_s) ── y        (channel-spatial)

    ``variant="paper"``: MLP without bias, maps [mean, max], no norm.
    ``variant="official"``: MLP with bias, maps [max, mean], BatchNorm (momentum 0.01)
    after the conv, zero-initialised by :meth:`reset_parameters`.
    timm's CBAM is ``variant="paper", norm=True, norm_momentum=0.1`` (its BatchNorm
    starts at PyTorch's gamma = 1, beta = 0).

    Args:
        channels: C, the input channels.
        spatial_dims: d, 1, 2 or 3.
        reduction: r of the channel module's MLP.
        kernel_size: k of the spatial module's k^d convolution (odd).
        arrangement: "channel-spatial", "spatial-channel" or "parallel".
        variant: "paper" or "official".
        norm: BatchNorm after the spatial convolution; None takes the variant's choice
            (paper: no, official: yes).
        norm_momentum: that BatchNorm's momentum; None takes 0.01 (the official code's).
        activation: the channel MLP's activation (name or ``nn.Module`` class).
        gate: both modules' gate (name or ``nn.Module`` class).
        impl: how ``forward`` runs: "auto", "reference", "fused", "native" or "triton" (see
            :mod:`excite.kernels`); None follows ``excite.kernels.set_default_impl``.
            Not part of the state dict.

    Attributes:
        channel: the :class:`ChannelAttention` module.
        spatial: the :class:`SpatialAttention` module.

    Raises:
        TypeError, ValueError: bad arguments (see the two sub-modules), or an unknown
            arrangement/variant (the message lists the valid ones).
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        reduction: float = 16,
        kernel_size: int | tuple[int, ...] = 7,
        arrangement: str = "channel-spatial",
        variant: str = "paper",
        norm: bool | None = None,
        norm_momentum: float | None = None,
        activation: str | type[nn.Module] = "relu",
        gate: str | type[nn.Module] = "sigmoid",
        impl: str | None = None,
    ) -> None:
        super().__init__()
        self.impl = check_optional_impl(impl)
        self.arrangement = check_choice(arrangement, ARRANGEMENTS, name="arrangement")
        self.variant = check_choice(variant, VARIANTS, name="variant")
        official = variant == "official"
        norm = official if norm is None else check_bool(norm, name="norm")
        norm_momentum = 0.01 if norm_momentum is None else norm_momentum
        channel = ChannelAttention(
            channels, reduction=reduction, bias=official, activation=activation, gate=gate,
            impl=impl,
        )
        spatial = SpatialAttention(
            channels,
            spatial_dims=spatial_dims,
            kernel_size=kernel_size,
            norm=norm,
            norm_momentum=norm_momentum,
            gate=gate,
            pools=("max", "avg") if official else ("avg", "max"),
            impl=impl,
        )
        self.channels = channels
        self.spatial_dims = spatial_dims
        # registered in execution order, so print(module) reads like forward
        if self.arrangement == "spatial-channel":
            self.spatial = spatial
            self.channel = channel
        else:
            self.channel = channel
            self.spatial = spatial

    def reset_parameters(self) -> None:
        """The family's own initialisation, called by excite's models after their weight
        init. ``variant="official"``: the official code's init, the spatial BatchNorm at
        gamma = 0, beta = 0 (so M_s starts at gate(0) = 0.5 everywhere). Otherwise the
        spatial module's (:meth:`SpatialAttention.reset_parameters`: a norm, e.g.
        timm's, at gamma = 1, beta = 0). The convolutions and the MLP keep the model's init.
        """
        _init_norm(self.spatial.norm, 0.0 if self.variant == "official" else 1.0)

    def _check(self, x: torch.Tensor) -> None:
        check_input(
            x, module="CBAM", channels=self.channels, ndim=self.spatial_dims + 2,
            dtype=self.channel.fc1.weight.dtype,
        )

    def residual_relu(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor | None:
        """``relu(self(x) + identity)`` in the block's one native pass ("channel-spatial"
        only), or None where that does not apply (see
        :func:`~excite.layers.fused_residual_relu`)."""
        if self.arrangement != "channel-spatial":
            return None
        self._check(x)
        ch, sp = self.channel, self.spatial
        fc1, fc2 = ch.fc1, ch.fc2
        cargs, sargs = ch._kernel_args(), sp._kernel_args()
        if cargs is None or sargs is None or cargs[1] != sargs[0]:
            return None
        if kernels.resolve_impl(self.impl, x) != "native":
            return None
        mlp = (fc1.weight, fc1.bias, fc2.weight, fc2.bias, ch.pools, cargs[0])
        conv = (sp.conv.weight, sargs[1], sargs[2], sp.pools)
        return unchecked.residual_relu(x, identity, mlp=mlp, conv=conv, gate=cargs[1])

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The combined map, shape (N, C, *spatial), such that ``forward(x) == x * gate(x)``.

        The separate maps are ``self.channel.gate`` and ``self.spatial.gate``.
        """
        self._check(x)
        channel, spatial = self.channel._gate, self.spatial._gate  # unchecked: checked above
        if self.arrangement == "channel-spatial":
            mc = channel(x)
            return mc * spatial(x * mc)
        if self.arrangement == "spatial-channel":
            ms = spatial(x)
            return ms * channel(x * ms)
        return channel(x) * spatial(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The refined features F'', same shape and dtype as ``x``.

        The input is checked once and the implementation chosen once for the whole
        block: "channel-spatial" runs as one fused CBAM kernel when both modules have a
        fused form with the same gate; "spatial-channel" runs M_s then M_c on the one
        implementation chosen (under "auto" the fused path on CPU, as for M_s);
        "parallel" has no fused form (the reference path; an explicit "fused"/"triton"
        raises ``ValueError``).
        """
        ch, sp = self.channel, self.spatial
        fc1, fc2 = ch.fc1, ch.fc2
        w1 = fc1.weight
        check_input(x, module="CBAM", channels=self.channels, ndim=self.spatial_dims + 2, dtype=w1.dtype)
        cargs, sargs = ch._kernel_args(), sp._kernel_args()
        if self.arrangement == "channel-spatial":
            supported = cargs is not None and sargs is not None and cargs[1] == sargs[0]
            which = kernels.resolve_impl(self.impl, x, supported=supported)
            if which == "reference":
                y = x * ch._gate(x)
                return y * sp._gate(y)
            return unchecked.cbam(
                x, w1, fc1.bias, fc2.weight, fc2.bias, sp.conv.weight,
                channel_pools=ch.pools, spatial_pools=sp.pools, activation=cargs[0],
                gate=cargs[1], scale=sargs[1], shift=sargs[2], impl=which,
            )
        if self.arrangement == "spatial-channel":
            which = kernels.resolve_impl(
                self.impl, x, supported=cargs is not None and sargs is not None
            )
            return self.channel._forward_with(self.spatial._forward_with(x, which, sargs), which, cargs)
        kernels.resolve_impl(self.impl, x, supported=False)  # raises for explicit fused/triton
        return x * self.channel._gate(x) * self.spatial._gate(x)
