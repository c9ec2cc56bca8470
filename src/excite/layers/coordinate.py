"""Coordinate attention (Hou, Zhou & Feng, "Coordinate Attention for Efficient Mobile
Network Design", CVPR 2021)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ._common import (
    check_bool,
    check_channels,
    check_input,
    check_positive_int,
    check_reduction,
    resolve_activation,
)
from .rank import check_spatial_dims, expand_axis, pool_except, spatial_axes
from .registry import register_attention
from .timm_keys import rename_prefixes


@register_attention("coord")
class CoordinateAttention(nn.Module):
    """Coordinate attention: channel attention factorised into one directional gate per
    spatial axis, so each gate keeps the positions along its axis.

    Hou et al. 2021, at rank d with spatial axes a = 1..d: pool along each axis
    separately, ``z^a_c(i) = mean of x_c over the positions whose a-th coordinate is i``
    (in 2D: ``z^h`` averages each row, ``z^w`` each column); concatenate the d strips,
    one shared transform ``f = δ(BN(F_1([z^1, ..., z^d])))`` with F_1 a 1×1 convolution
    C→C/r, split f back into ``f^a``, and ``g^a = sigma(F_a(f^a))`` with one 1×1
    convolution C/r→C per axis; ``y = x ⊙ g^1 ⊙ ... ⊙ g^d`` (each g^a broadcast along
    the other axes)::

        x ──┬──────────────────────────────────────────────────────── ⊙ ── y
            ├─ mean ⊥ axis 1 ─┐                    ┌─ F_1' ─ gate ─ g^1 ┤
            ├─ ...            ├─ cat ─ F_1 ─ BN ─ δ ┤ ...                │
            └─ mean ⊥ axis d ─┘                    └─ F_d' ─ gate ─ g^d ┘

    In 2D this is the paper's module (g^h of shape (N, C, H, 1), g^w (N, C, 1, W)); in
    3D there are three gates (T, H, W), in 1D one position-wise gate (N, C, L).

    The hidden width is ``max(min_hidden, channels // reduction)`` (the paper's
    ``max(8, C // 32)``). Parameters: ``C·m + 2m`` for F_1 and BN plus ``d·m·C`` for
    the per-axis convolutions, with ``m + d·C`` biases when ``bias=True``.

    Args:
        channels: C, the input channels.
        spatial_dims: d, 1, 2 or 3 (the number of directional gates).
        reduction: r, the paper's 32.
        min_hidden: the smallest hidden width (the paper's 8).
        hidden_channels: the hidden width directly (overrides ``reduction`` and
            ``min_hidden``).
        bias: biases in the 1×1 convolutions (the authors' code has them; timm's
            ``CoordAttn`` has none).
        norm: BatchNorm after F_1 (over the concatenated strips, as in the paper).
        activation: δ, a name or an ``nn.Module`` class (the paper's h-swish,
            ``nn.Hardswish``).
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/spatial_dims/reduction/min_hidden/hidden_channels, or
            an unknown activation/gate name.
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        reduction: float = 32,
        min_hidden: int = 8,
        hidden_channels: int | None = None,
        bias: bool = True,
        norm: bool = True,
        activation: str | type[nn.Module] = nn.Hardswish,
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        check_reduction(reduction)
        check_positive_int(min_hidden, name="min_hidden")
        if hidden_channels is None:
            hidden = max(min_hidden, int(channels // reduction))
        else:
            hidden = check_positive_int(hidden_channels, name="hidden_channels")
        check_bool(bias, name="bias")
        check_bool(norm, name="norm")
        self.conv1 = nn.Conv1d(channels, hidden, kernel_size=1, bias=bias)
        self.norm = nn.BatchNorm1d(hidden) if norm else nn.Identity()
        self.act = resolve_activation(activation, name="activation")
        self.convs = nn.ModuleList(
            nn.Conv1d(hidden, channels, kernel_size=1, bias=bias) for _ in range(spatial_dims)
        )
        self.gate_act = resolve_activation(gate, name="gate")

    def gate(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The d directional gates for input (N, C, *spatial): gate a has shape
        (N, C, 1, ..., S_a, ..., 1), S_a at dimension a + 2 (in 2D: (N, C, H, 1) and
        (N, C, 1, W)); ``forward(x) == x * g[0] * ... * g[d-1]``."""
        check_input(
            x, module="CoordinateAttention", channels=self.channels, ndim=self.spatial_dims + 2,
            dtype=self.conv1.weight.dtype,
        )
        axes = spatial_axes(x.ndim)
        strips = [pool_except(x, a) for a in axes]  # z^a, (N, C, S_a)
        f = self.act(self.norm(self.conv1(torch.cat(strips, dim=2))))  # shared transform
        parts = torch.split(f, [s.shape[2] for s in strips], dim=2)
        return tuple(
            expand_axis(self.gate_act(conv(part)), a, x.ndim)
            for conv, part, a in zip(self.convs, parts, axes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x ⊙ g^1 ⊙ ... ⊙ g^d``, same shape and dtype as ``x``."""
        out = x
        for g in self.gate(x):
            out = out * g
        return out


def coordinate_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``CoordAttn`` state dict with :class:`CoordinateAttention`'s keys:
    ``conv1`` -> ``conv1``, ``bn1`` -> ``norm``, ``conv_h`` -> ``convs.0``, ``conv_w`` ->
    ``convs.1`` (1×1 Conv2d weights as Conv1d weights). Load it into
    ``CoordinateAttention(C, spatial_dims=2, hidden_channels=m, bias=False)`` with timm's
    width ``m = max(8, int(C / 24 + 4) // 8 * 8)`` (``make_divisible(C / 16 · 2/3, 8)``
    without its round-up).

    Raises:
        ValueError: a key that is not part of timm's module.
    """
    renames = {
        "conv1.": ("conv1.", 2),
        "bn1.": ("norm.", None),
        "conv_h.": ("convs.0.", 2),
        "conv_w.": ("convs.1.", 2),
    }
    return rename_prefixes(state_dict, renames, module="CoordAttn")
