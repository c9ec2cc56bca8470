"""Squeeze-and-Excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018)."""

from __future__ import annotations

import torch
from torch import nn

from ._common import (
    ChannelMLP,
    check_channels,
    check_optional_impl,
    check_positive_int,
    check_reduction,
    hidden_width,
)
from .registry import register_attention


@register_attention("se")
class SqueezeExcite(ChannelMLP):
    """Squeeze-and-Excitation: channel gate from globally pooled features.

    Hu et al. 2018, eq. 2-4: ``z = mean_spatial(x)``, ``s = sigma(W2 delta(W1 z))``,
    ``y = s * x``, with W1 in R^{C/r x C}, W2 in R^{C x C/r}::

        x ──┬──────────────────────────────────────────── ⊙ ── y
            └─ mean ─ fc1 (C→C/r) ─ act ─ fc2 (C/r→C) ─ gate ┘

    Works on (N, C, L), (N, C, H, W) and (N, C, T, H, W). ``fc1`` / ``fc2`` are
    ``nn.Linear`` layers (a 1x1 convolution's weight is the same matrix with trailing
    1-sized axes).

    Args:
        channels: C, the input channels.
        reduction: r; the hidden width is ``channels // reduction``.
        hidden_channels: the hidden width C/r directly (overrides ``reduction``).
        divisor: round C/r to a multiple of this (timm's ``make_divisible``); 1 = floor.
        bias: biases in both linear layers (the paper's FC layers have them).
        activation: delta, a name ("relu", "silu", ...) or an ``nn.Module`` class.
        gate: sigma, a name ("sigmoid", "hard_sigmoid", ...) or an ``nn.Module`` class.
        impl: how ``forward`` runs: "auto", "reference", "fused", "native" or "triton" (see
            :mod:`excite.kernels`); None follows ``excite.kernels.set_default_impl``.
            Not part of the state dict.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a non-positive channels/reduction/divisor/hidden_channels, a hidden
            width that resolves to 0, or an unknown activation name.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: float = 16,
        hidden_channels: int | None = None,
        divisor: int = 1,
        bias: bool = True,
        activation: str | type[nn.Module] = "relu",
        gate: str | type[nn.Module] = "sigmoid",
        impl: str | None = None,
    ) -> None:
        impl = check_optional_impl(impl)
        check_channels(channels)
        check_reduction(reduction)
        check_positive_int(divisor, name="divisor")
        if hidden_channels is None:
            hidden = hidden_width(channels, reduction, divisor=divisor, module="SqueezeExcite")
        else:
            hidden = check_positive_int(hidden_channels, name="hidden_channels")
        super().__init__(
            channels, hidden, pools=("avg",), bias=bias, activation=activation, gate=gate,
            impl=impl,
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel map s, shape (N, C, 1, ..., 1), for input (N, C, *spatial)."""
        self._check(x)
        return self._gate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        self._check(x)
        return self._run(x)
