"""Video ResNets R3D-18, MC3-18 and R(2+1)D-18 (Tran et al., CVPR 2018).

All three are :class:`excite.models.resnet.ResNet` with :class:`BasicBlock` and
``spatial_dims=3``; they differ only in the conv builders injected into the blocks and
in the stem, as in torchvision's ``models/video/resnet.py``:

==============  ====================================  ==================================
model           block convolutions                    stem
==============  ====================================  ==================================
r3d_18          3x3x3 in every stage                  3x7x7, stride (1, 2, 2), no pool
mc3_18          3x3x3 in stage 1, 1x3x3 in 2-4        3x7x7, stride (1, 2, 2), no pool
r2plus1d_18     1x3x3 → BN → ReLU → 3x1x1             1x7x7 (45) → BN → ReLU → 3x1x1
==============  ====================================  ==================================

Input (N, 3, T, H, W); with (1, 3, 16, 112, 112) the three cost 40.70, 43.34 and
40.52 GMACs (torchvision's published figures).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from excite.layers.factory import AttentionLike
from excite.models.resnet import BasicBlock, Conv3DInflated, ConvNd, ResNet

__all__ = ["Conv2Plus1D", "Conv3DInflated", "Conv3DNoTemporal", "mc3_18", "r2plus1d_18", "r3d_18"]


def _check_3d(spatial_dims: int) -> None:
    if spatial_dims != 3:
        raise ValueError(f"video conv builders need spatial_dims=3, got {spatial_dims!r}")


class Conv3DNoTemporal(Conv3DInflated):
    """Builder of a 1x3x3 convolution with stride (1, s, s): space only (MC3's later stages)."""

    def __init__(self) -> None:
        super().__init__(time_kernel=1, kernel_size=3)

    def __repr__(self) -> str:
        return "Conv3DNoTemporal()"


class Conv2Plus1D:
    """Builder of R(2+1)D's factorised convolution (Tran et al. 2018, Sec. 3.5)::

        Conv3d 1x3x3, stride (1, s, s) → BN → ReLU → Conv3d 3x1x1, stride (s, 1, 1)

    The intermediate width M_i = floor(t d^2 N_{i-1} N_i / (d^2 N_{i-1} + t N_i)) with
    t = d = 3 keeps the parameter count of the 3x3x3 convolution it replaces; as in
    torchvision, N_{i-1}, N_i are the *block's* input and output widths, shared by both
    convolutions of a block.
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
    ) -> nn.Module:
        _check_3d(spatial_dims)
        if groups != 1:
            raise ValueError(f"Conv2Plus1D supports groups=1 only, got groups={groups}")
        block_in, block_out = block_channels
        mid = (block_in * block_out * 3 * 3 * 3) // (block_in * 3 * 3 + 3 * block_out)
        return nn.Sequential(
            nn.Conv3d(
                in_channels, mid, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                padding=(0, 1, 1), bias=False,
            ),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(
                mid, out_channels, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                padding=(1, 0, 0), bias=False,
            ),
        )

    def downsample_stride(self, stride: int, spatial_dims: int) -> tuple[int, ...]:
        return (stride,) * spatial_dims

    def __repr__(self) -> str:
        return "Conv2Plus1D()"


def _r2plus1d_stem(in_channels: int, out_channels: int, spatial_dims: int) -> nn.Module:
    """R(2+1)D stem convolution: 1x7x7 (45 ch), stride (1, 2, 2) → BN → ReLU → 3x1x1."""
    _check_3d(spatial_dims)
    return nn.Sequential(
        nn.Conv3d(in_channels, 45, kernel_size=(1, 7, 7), stride=(1, 2, 2),
                  padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(45),
        nn.ReLU(inplace=True),
        nn.Conv3d(45, out_channels, kernel_size=(3, 1, 1), stride=(1, 1, 1),
                  padding=(1, 0, 0), bias=False),
    )


def _video_resnet(
    conv_builder: Any,
    *,
    num_classes: int,
    in_channels: int,
    attention: AttentionLike,
    attention_kwargs: Mapping[str, Any] | None,
    r2plus1d_stem: bool = False,
    **kwargs: Any,
) -> ResNet:
    stem: dict[str, Any] = (
        {"stem_conv": _r2plus1d_stem}
        if r2plus1d_stem
        else {"stem_kernel_size": (3, 7, 7), "stem_stride": (1, 2, 2)}
    )
    return ResNet(
        BasicBlock,
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        spatial_dims=3,
        stem_pool=False,
        conv_builder=conv_builder,
        attention=attention,
        attention_kwargs=attention_kwargs,
        fc_init_std=0.01,
        **stem,
        **kwargs,
    )


def r3d_18(
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    attention: AttentionLike = None,
    attention_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ResNet:
    """R3D-18: 3x3x3 convolutions throughout (33.37 M parameters at 400 classes)."""
    return _video_resnet(
        ConvNd(3), num_classes=num_classes, in_channels=in_channels, attention=attention,
        attention_kwargs=attention_kwargs, **kwargs,
    )


def mc3_18(
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    attention: AttentionLike = None,
    attention_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ResNet:
    """MC3-18: mixed convolutions, 3x3x3 in stage 1 and 1x3x3 in stages 2-4."""
    no_temporal = Conv3DNoTemporal()
    return _video_resnet(
        [ConvNd(3), no_temporal, no_temporal, no_temporal], num_classes=num_classes,
        in_channels=in_channels, attention=attention, attention_kwargs=attention_kwargs,
        **kwargs,
    )


def r2plus1d_18(
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    attention: AttentionLike = None,
    attention_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ResNet:
    """R(2+1)D-18: every 3x3x3 convolution factorised into 1x3x3 then 3x1x1."""
    return _video_resnet(
        Conv2Plus1D(), num_classes=num_classes, in_channels=in_channels, attention=attention,
        attention_kwargs=attention_kwargs, r2plus1d_stem=True, **kwargs,
    )
