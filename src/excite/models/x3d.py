"""X3D-XS/S/M/L (Feichtenhofer, "X3D: Expanding Architectures for Efficient Video
Recognition", CVPR 2020), following the authors' released code (SlowFast / pytorchvideo).

Network (X3D-M widths; stage depths ceil(gamma_d * (1, 2, 5, 3)))::

    x (N, 3, T, H, W)
    stem    1x3x3 conv 3→24, stride (1,2,2) → 5x1x1 channel-wise conv → BN → ReLU
    stage1  blocks of: 1x1x1 conv → BN → ReLU → 3x3x3 channel-wise conv (stride) → BN
    …               → [SE] → Swish → 1x1x1 conv → BN, (+ shortcut) → ReLU
    stage4  widths 24/48/96/192 out, inner width 2.25x (54/108/216/432)
    head    1x1x1 conv 192→432 → BN → ReLU → global average pool
            → 1x1x1 conv 432→2048 (no BN) → ReLU → dropout → fc 2048→classes

SE (Hu et al.) sits on the inner width of every other block starting with the first of
each stage, with hidden width inner/16 rounded to the nearest multiple of 8, at least 8,
bumped up by 8 if that lost more than 10 % (``make_divisible``, the released code's
``round_width``). That is X3D's explicit default attention, :data:`X3D_SE` =
``attention_factory("se", reduction=16, divisor=8)``; ``attention=`` puts another module
(e.g. "cbam") in those positions instead, and None / "none" removes it.

The shortcut of each stage's first block is a strided 1x1x1 convolution + BatchNorm
(SlowFast's ResBlock; pytorchvideo omits that BatchNorm in stage 1, 48 parameters).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from excite.checks import check_number, check_positive_int, make_divisible
from excite.layers.factory import AttentionLike, attention_factory, reset_attention, resolve_attention

__all__ = ["X3D", "X3D_CONFIGS", "X3D_SE", "round_width", "x3d"]

#: X3D's own attention: SE with hidden width make_divisible(inner / 16, 8)
X3D_SE = attention_factory("se", reduction=16, divisor=8)

# variant -> (depth factor gamma_d, default input clip T x crop S, as released)
X3D_CONFIGS: dict[str, dict[str, Any]] = {
    "xs": {"depth_factor": 2.2, "input_size": (4, 160, 160)},
    "s": {"depth_factor": 2.2, "input_size": (13, 160, 160)},
    "m": {"depth_factor": 2.2, "input_size": (16, 224, 224)},
    "l": {"depth_factor": 5.0, "input_size": (16, 312, 312)},
}


def round_width(width: float, multiplier: float, *, min_width: int = 8, divisor: int = 8) -> int:
    """``width * multiplier`` rounded as the X3D code does: :func:`excite.checks.make_divisible`
    with ``min_value=min_width``."""
    return make_divisible(width * multiplier, divisor, min_value=min_width)


class X3DBlock(nn.Module):
    """X3D residual bottleneck with a channel-wise 3x3x3 convolution.

    Args:
        in_channels: block input width.
        inner_channels: width of the 1x1x1 expansion and of the channel-wise conv.
        out_channels: block output width.
        stride: spatial stride of the channel-wise conv (temporal stride is 1).
        attention: the module applied after ``bn_b`` (X3D's SE or a replacement), or
            ``nn.Identity``.
    """

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        *,
        stride: int,
        attention: nn.Module,
    ) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(in_channels, inner_channels, kernel_size=1, bias=False)
        self.bn_a = nn.BatchNorm3d(inner_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv_b = nn.Conv3d(
            inner_channels, inner_channels, kernel_size=3, stride=(1, stride, stride),
            padding=1, groups=inner_channels, bias=False,
        )
        self.bn_b = nn.BatchNorm3d(inner_channels)
        self.attention = attention
        self.swish = nn.SiLU()
        self.conv_c = nn.Conv3d(inner_channels, out_channels, kernel_size=1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=1,
                          stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.swish(self.attention(self.bn_b(self.conv_b(out))))
        out = self.bn_c(self.conv_c(out))
        return self.relu(out + identity)


class X3D(nn.Module):
    """X3D backbone and head (see the module docstring for the layout).

    Args:
        depth_factor: gamma_d; stage depths are ceil(gamma_d * (1, 2, 5, 3)).
        width_factor: gamma_w, 2.0 in all released models (stem 12 → 24 channels).
        bottleneck_factor: inner width / output width of a block (2.25).
        num_classes: outputs of the final fc.
        in_channels: input channels.
        attention: the module in every other block: X3D's own SE (:data:`X3D_SE`) by
            default; a name, class or factory replaces it (in the same blocks); None or
            "none" removes it.
        attention_kwargs: options merged into the attention factory.
        head_channels: width of the head's last 1x1x1 conv (2048).
        dropout: dropout before the fc (0.5 in the released configs).
        zero_init_residual: zero ``bn_c`` weights (the released configs do).
    """

    def __init__(
        self,
        *,
        depth_factor: float = 2.2,
        width_factor: float = 2.0,
        bottleneck_factor: float = 2.25,
        num_classes: int = 400,
        in_channels: int = 3,
        attention: AttentionLike = X3D_SE,
        attention_kwargs: Mapping[str, Any] | None = None,
        head_channels: int = 2048,
        dropout: float = 0.5,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("depth_factor", depth_factor), ("width_factor", width_factor),
                            ("bottleneck_factor", bottleneck_factor)):
            check_number(value, name=name, minimum=0, strict_minimum=True)
        check_positive_int(num_classes, name="num_classes")
        check_positive_int(in_channels, name="in_channels")
        factory = resolve_attention(attention, attention_kwargs)
        self.spatial_dims = 3
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.attention_factory = factory
        self.attention_name = None if factory.is_none else factory.name

        stem_channels = round_width(12, width_factor)
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, stem_channels, kernel_size=(1, 3, 3), stride=(1, 2, 2),
                      padding=(0, 1, 1), bias=False),
            nn.Conv3d(stem_channels, stem_channels, kernel_size=(5, 1, 1), padding=(2, 0, 0),
                      groups=stem_channels, bias=False),
            nn.BatchNorm3d(stem_channels),
            nn.ReLU(inplace=True),
        )
        base = [12]
        for _ in range(3):
            base.append(round_width(base[-1], 2.0))
        channels = stem_channels
        stages = []
        inner = channels
        attention_modules: list[nn.Module] = []
        for base_width, base_depth in zip(base, (1, 2, 5, 3)):
            out = round_width(base_width, width_factor)
            inner = int(bottleneck_factor * out)
            depth = int(math.ceil(depth_factor * base_depth))
            blocks: list[tuple[str, nn.Module]] = []
            for b in range(depth):
                # a "block" family in every other block, starting with the first
                in_block = factory.placement == "block" and b % 2 == 0
                gate = factory(inner, spatial_dims=3) if in_block else nn.Identity()
                attention_modules.append(gate)
                blocks.append((str(b), X3DBlock(channels if b == 0 else out, inner, out,
                                                stride=2 if b == 0 else 1, attention=gate)))
            if factory.placement == "stage" and not factory.is_none:
                # a "stage" family once on each stage's output (``stages.S.attention``)
                blocks.append(("attention", factory(out, spatial_dims=3)))
                attention_modules.append(blocks[-1][1])
            stages.append(nn.Sequential(OrderedDict(blocks)))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.head_conv = nn.Conv3d(channels, inner, kernel_size=1, bias=False)
        self.head_bn = nn.BatchNorm3d(inner)
        self.head_relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.head_proj = nn.Conv3d(inner, head_channels, kernel_size=1, bias=False)
        self.head_proj_relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(head_channels, num_classes)
        self.num_features = head_channels

        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, X3DBlock):
                    nn.init.zeros_(m.bn_c.weight)
        for module in attention_modules:  # each family's own init wins over the loop above
            reset_attention(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, H, W) → logits (N, num_classes)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"X3D expects input of shape (N, {self.in_channels}, T, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        x = self.stages(self.stem(x))
        x = self.avgpool(self.head_relu(self.head_bn(self.head_conv(x))))
        x = self.head_proj_relu(self.head_proj(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def x3d(
    variant: str,
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    attention: AttentionLike = X3D_SE,
    attention_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> X3D:
    """X3D-``variant`` for variant in {"xs", "s", "m", "l"} (XS/S/M share weights' shapes)."""
    if variant not in X3D_CONFIGS:
        raise ValueError(f"X3D variant must be one of {sorted(X3D_CONFIGS)}, got {variant!r}")
    kwargs.setdefault("depth_factor", X3D_CONFIGS[variant]["depth_factor"])
    return X3D(
        num_classes=num_classes, in_channels=in_channels, attention=attention,
        attention_kwargs=attention_kwargs, **kwargs,
    )
