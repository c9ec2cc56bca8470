"""Strip pooling (Hou, Zhang, Cheng & Feng, "Strip Pooling: Rethinking Spatial Pooling
for Scene Parsing", CVPR 2020): the strip pooling module (SPM)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ._common import (
    check_bool,
    check_channels,
    check_choice,
    check_input,
    check_kernel_size,
    resolve_activation,
)
from .rank import check_spatial_dims, conv_nd, expand_axis, pool_except, spatial_axes
from .registry import register_attention
from .timm_keys import rename_prefixes

FUSIONS = ("conv", "sum")


@register_attention("strip")
class StripPooling(nn.Module):
    """Strip pooling module: long, narrow pooling windows along each spatial axis, a 1D
    convolution on every strip, and one gate from their fused sum.

    Hou et al. 2020 (SPM): ``y^h_c(i)`` averages row i, ``y^v_c(j)`` column j; a 1D
    convolution of kernel 3 (with BatchNorm) modulates each strip with its neighbours;
    the strips are expanded back and summed, ``y_{c,i,j} = y^h_{c,i} + y^v_{c,j}``, and
    ``z = x ⊙ sigma(f(y))`` with f a 1×1 convolution (after a ReLU, as in the authors'
    code). At rank d there is one strip per spatial axis (the mean over all the other
    axes) and one 1D convolution per strip; the sum broadcasts to the full grid::

        x ──┬─────────────────────────────────────────────────────────── ⊙ ── z
            ├─ mean ⊥ axis 1 ─ conv1d k ─ BN ─┐                            │
            ├─ ...                            ├─ Σ (broadcast) ─ ReLU ─ f ─ gate
            └─ mean ⊥ axis d ─ conv1d k ─ BN ─┘

    The gate is one fused (N, C, *spatial) map (the strips interact through ReLU and f
    before the gate), so unlike coordinate attention it does not factor into per-axis
    gates; :meth:`strips` returns the per-axis terms of the sum.

    ``fusion="sum"`` gates the plain sum (no ReLU, no f) and ``depthwise=True`` makes
    the strip convolutions per-channel: with ``norm=False`` as well this is timm's
    ``StripAttn``. Parameters: ``d·k·C²`` for the strip convolutions (``d·k·C``
    depth-wise), ``2·d·C`` for their BatchNorms, ``C² + C`` for f.

    Args:
        channels: C, the input channels.
        spatial_dims: d, 1, 2 or 3 (the number of strips).
        kernel_size: k of the 1D strip convolutions, odd (the paper's 3).
        depthwise: per-channel strip convolutions (groups = C) instead of C→C.
        norm: BatchNorm after each strip convolution.
        fusion: "conv" (ReLU and the 1×1 convolution f, the paper) or "sum".
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/spatial_dims, an even or non-positive kernel_size, or
            an unknown fusion/gate.
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        kernel_size: int = 3,
        depthwise: bool = False,
        norm: bool = True,
        fusion: str = "conv",
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        (k,) = check_kernel_size(kernel_size, 1)
        check_bool(depthwise, name="depthwise")
        check_bool(norm, name="norm")
        self.fusion = check_choice(fusion, FUSIONS, name="fusion")
        groups = channels if depthwise else 1
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, k, padding=k // 2, groups=groups, bias=False)
            for _ in range(spatial_dims)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(channels) if norm else nn.Identity() for _ in range(spatial_dims)
        )
        if fusion == "conv":
            self.act = nn.ReLU()
            self.fuse = conv_nd(spatial_dims)(channels, channels, kernel_size=1)
        else:
            self.act = None
            self.fuse = None
        self.gate_act = resolve_activation(gate, name="gate")

    def _check(self, x: torch.Tensor) -> None:
        check_input(x, module="StripPooling", channels=self.channels, ndim=self.spatial_dims + 2,
                    dtype=self.convs[0].weight.dtype)

    def strips(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-axis terms ``BN(conv1d(mean ⊥ axis a))`` for input (N, C, *spatial),
        shaped to broadcast: (N, C, 1, ..., S_a, ..., 1) with S_a at dimension a + 2."""
        self._check(x)
        return tuple(
            expand_axis(norm(conv(pool_except(x, a))), a, x.ndim)
            for conv, norm, a in zip(self.convs, self.norms, spatial_axes(x.ndim))
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The fused map ``sigma(f(ReLU(Σ_a strip_a)))``, shape (N, C, *spatial)."""
        strips = self.strips(x)
        y = sum(strips[1:], strips[0])  # broadcasts to (N, C, *spatial)
        if self.fuse is not None:
            y = self.fuse(self.act(y))
        return self.gate_act(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        return x * self.gate(x)


def strip_pooling_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``StripAttn`` state dict with :class:`StripPooling`'s keys: ``conv_h`` /
    ``conv_w`` -> ``convs.0`` / ``convs.1`` ((C, 1, k, 1) and (C, 1, 1, k) as
    (C, 1, k)). Load it into ``StripPooling(C, spatial_dims=2, kernel_size=3,
    depthwise=True, norm=False, fusion="sum")``.

    Raises:
        ValueError: a key that is not part of timm's module.
    """
    return rename_prefixes(
        state_dict, {"conv_h.": ("convs.0.", 2), "conv_w.": ("convs.1.", 2)}, module="StripAttn"
    )
