"""SimAM (Yang, Zhang, Li & Xie, "SimAM: A Simple, Parameter-Free Attention Module for
Convolutional Neural Networks", ICML 2021)."""

from __future__ import annotations

import math

import torch
from torch import nn

from excite.checks import check_number

from ._common import check_channels, check_input, resolve_activation
from .rank import spatial_axes
from .registry import register_attention

_HALF = (torch.float16, torch.bfloat16)


@register_attention("simam")
class SimAM(nn.Module):
    """SimAM: a parameter-free full 3D weight (channel × position) from a neuron energy.

    Yang et al. 2021: the minimal energy of neuron t in its channel is
    ``e_t* = 4(σ̂² + λ) / ((t − μ̂)² + 2σ̂² + 2λ)``, with μ̂ and σ̂² the mean and variance
    of that channel over the spatial positions; neurons that stand out (low energy)
    matter more, so ``y = x ⊙ sigma(1 / e*)``, i.e.
    ``1 / e_t* = (t − μ̂)² / (4(σ̂² + λ)) + 1/2``::

        x ──┬────────────────────────────────────────────────── ⊙ ── y
            └─ (x − μ̂)², σ̂² per channel ─ 1/e* ─ gate ──────────┘

    μ̂ and σ̂² run over all spatial positions of the input, so the module works on
    (N, C, L), (N, C, H, W) and (N, C, T, H, W) alike; σ̂² divides by M − 1 for M
    positions, as the authors' code does (by 1 when M = 1, where every t = μ̂ and the
    weight is sigma(1/2)). The statistics are computed in float32 for fp16/bf16 inputs.
    No parameters.

    Args:
        channels: C, checked against the input when given; None accepts any C.
        e_lambda: λ, the energy's regulariser (the paper's 1e-4), > 0.
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a non-positive channels or e_lambda, or an unknown gate name.
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        e_lambda: float = 1e-4,
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = None if channels is None else check_channels(channels)
        self.e_lambda = check_number(e_lambda, name="e_lambda", minimum=0, strict_minimum=True)
        self.gate_act = resolve_activation(gate, name="gate")

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The weights ``sigma(1 / e*)``, shape (N, C, *spatial), for input (N, C, *spatial)."""
        check_input(x, module="SimAM", channels=self.channels)
        axes = spatial_axes(x.ndim)
        t = x.float() if x.dtype in _HALF else x
        n = max(math.prod(x.shape[2:]) - 1, 1)
        d = (t - t.mean(axes, keepdim=True)).square()  # (t − μ̂)²
        variance = d.sum(axes, keepdim=True) / n  # σ̂²
        inverse_energy = d / (4 * (variance + self.e_lambda)) + 0.5
        return self.gate_act(inverse_energy).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda!r}"
