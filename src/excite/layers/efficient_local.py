"""Efficient local attention (Xu & Wan, "ELA: Efficient Local Attention for Deep
Convolutional Neural Networks", arXiv:2403.01123, 2024)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ._common import (
    check_bool,
    check_channels,
    check_input,
    check_kernel_size,
    check_positive_int,
    resolve_activation,
)
from .rank import check_spatial_dims, expand_axis, pool_except, spatial_axes
from .registry import register_attention
from .timm_keys import rename_prefixes

#: the paper's GroupNorm group count (ELA-B, ELA-S, ELA-L)
DEFAULT_NORM_GROUPS = 16


def _check_divides(value: object, channels: int, *, name: str) -> int:
    check_positive_int(value, name=name)
    if channels % value:  # type: ignore[operator]
        raise ValueError(f"{name} must divide channels={channels}, got {name}={value!r}")
    return value  # type: ignore[return-value]


def default_norm_groups(channels: int) -> int:
    """The GroupNorm groups for ``norm_groups=None``: the paper's 16 when it divides C,
    else the largest divisor of C below 16 (e.g. 54 -> 9, 24 -> 12, 7 -> 7)."""
    return max(g for g in range(1, DEFAULT_NORM_GROUPS + 1) if channels % g == 0)


@register_attention("ela")
class EfficientLocalAttention(nn.Module):
    """Efficient local attention: coordinate-style per-axis gates from strip pooling, with
    a local 1D convolution and GroupNorm instead of a channel reduction.

    Xu & Wan 2024: ``z^h`` averages each row, ``z^w`` each column;
    ``y^h = sigma(G_n(F_h(z^h)))``, ``y^w = sigma(G_n(F_w(z^w)))`` with F a 1D
    convolution of kernel k along the strip (depth-wise for ELA-T/B, C/8 groups for
    ELA-S/L; shared by the two directions) and G_n GroupNorm; ``Y = x ⊙ y^h ⊙ y^w``.
    At rank d there is one strip and one gate per spatial axis (the strip of axis a
    averages all the other spatial axes), through the same convolution and norm::

        x ──┬───────────────────────────────────────────────────── ⊙ ── y
            ├─ mean ⊥ axis 1 ─ conv1d k ─ GN ─ [act] ─ gate ─ y^1 ─┤
            ├─ ...               (shared)                          │
            └─ mean ⊥ axis d ─ conv1d k ─ GN ─ [act] ─ gate ─ y^d ─┘

    The paper's presets: ELA-T ``kernel_size=5, norm_groups=32``; ELA-B
    ``kernel_size=7, norm_groups=16`` (the default); ELA-S ``kernel_size=5,
    conv_groups=C // 8``; ELA-L ``kernel_size=7, conv_groups=C // 8`` (both with 16
    norm groups). ``shared=False`` gives each axis its own convolution and norm, and
    with ``norm_groups=1, activation="silu"`` this is timm's ``EfficientLocalAttn``.

    Parameters: ``k·C·C/g`` for a convolution with g groups, ``2C`` for its GroupNorm
    (plus ``C`` bias with ``bias=True``); once when ``shared``, d times otherwise.

    Args:
        channels: C, the input channels.
        spatial_dims: d, 1, 2 or 3 (the number of gates).
        kernel_size: k, odd (the paper's 5 or 7).
        conv_groups: the convolution's groups; None is C (depth-wise). Must divide C.
        norm_groups: the GroupNorm groups; must divide C. None: 16 when it divides C,
            else the largest divisor of C below 16 (:func:`default_norm_groups`).
        shared: one convolution and norm for every axis (the paper) or one per axis.
        bias: a bias in the convolution (the paper has none).
        activation: applied between the norm and the gate: "identity" (the paper), or a
            name / ``nn.Module`` class (timm uses SiLU).
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/spatial_dims, an even or non-positive kernel_size,
            groups that do not divide channels, or an unknown activation/gate name.
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        kernel_size: int = 7,
        conv_groups: int | None = None,
        norm_groups: int | None = None,
        shared: bool = True,
        bias: bool = False,
        activation: str | type[nn.Module] = "identity",
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        (k,) = check_kernel_size(kernel_size, 1)
        groups = channels if conv_groups is None else _check_divides(
            conv_groups, channels, name="conv_groups"
        )
        norm_groups = default_norm_groups(channels) if norm_groups is None else _check_divides(
            norm_groups, channels, name="norm_groups"
        )
        check_bool(shared, name="shared")
        check_bool(bias, name="bias")
        self.shared = shared
        copies = 1 if shared else spatial_dims
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, k, padding=k // 2, groups=groups, bias=bias)
            for _ in range(copies)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(norm_groups, channels) for _ in range(copies))
        self.act = resolve_activation(activation, name="activation")
        self.gate_act = resolve_activation(gate, name="gate")

    def gate(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The d per-axis gates for input (N, C, *spatial): gate a has shape
        (N, C, 1, ..., S_a, ..., 1), S_a at dimension a + 2 (in 2D: y^h (N, C, H, 1) and
        y^w (N, C, 1, W)); ``forward(x) == x * g[0] * ... * g[d-1]``."""
        check_input(
            x, module="EfficientLocalAttention", channels=self.channels, ndim=self.spatial_dims + 2,
            dtype=self.convs[0].weight.dtype,
        )
        gates = []
        for i, a in enumerate(spatial_axes(x.ndim)):
            j = 0 if self.shared else i
            y = self.act(self.norms[j](self.convs[j](pool_except(x, a))))
            gates.append(expand_axis(self.gate_act(y), a, x.ndim))
        return tuple(gates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x ⊙ y^1 ⊙ ... ⊙ y^d``, same shape and dtype as ``x``."""
        out = x
        for g in self.gate(x):
            out = out * g
        return out


def efficient_local_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``EfficientLocalAttn`` state dict with :class:`EfficientLocalAttention`'s
    keys: ``conv_h`` / ``conv_w`` -> ``convs.0`` / ``convs.1`` ((C, 1, k, 1) and
    (C, 1, 1, k) as (C, 1, k)), ``norm_h`` / ``norm_w`` -> ``norms.0`` / ``norms.1``.
    Load it into ``EfficientLocalAttention(C, spatial_dims=2, kernel_size=7,
    shared=False, norm_groups=1, activation="silu")``.

    Raises:
        ValueError: a key that is not part of timm's module.
    """
    renames = {
        "conv_h.": ("convs.0.", 2),
        "conv_w.": ("convs.1.", 2),
        "norm_h.": ("norms.0.", None),
        "norm_w.": ("norms.1.", None),
    }
    return rename_prefixes(state_dict, renames, module="EfficientLocalAttn")
