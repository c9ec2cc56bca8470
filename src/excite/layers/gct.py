"""Gated Channel Transformation (Yang et al., "Gated Channel Transformation for Visual
Recognition", CVPR 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn

from excite.checks import check_number

from ._common import check_channels, check_choice, check_input
from .rank import accumulate_dtype, spatial_axes
from .registry import register_attention

MODES = ("l2", "l1")


@register_attention("gct")
class GCT(nn.Module):
    """Gated Channel Transformation: global context embedding, channel normalisation and
    a tanh gate around 1 (Yang et al. 2020, eq. 1-3)::

        s_c = alpha_c ||x_c||_2 = alpha_c [sum_p x_c(p)^2 + eps]^(1/2)      (embedding)
        ŝ_c = sqrt(C) s_c / ||s||_2 = sqrt(C) s_c / [sum_c s_c^2 + eps]^(1/2)  (normalisation)
        y_c = x_c [1 + tanh(gamma_c ŝ_c + beta_c)]                          (gating)

        x ──┬────────────────────────────────────────────────────── ⊙ ── y
            └─ ||x_c|| over positions ─ ·alpha ─ channel norm ─ ·gamma + beta ─ 1 + tanh

    ``mode="l1"`` is the paper's l1 variant: ``s_c = alpha_c sum_p |x_c(p)|`` and
    ``ŝ_c = C s_c / (sum_c |s_c| + eps)``. The sums run over every spatial axis, so the
    module works on any rank; the embedding and normalisation are computed in float32
    for fp16/bf16 input. The paper initialises alpha = 1, gamma = beta = 0, so the module
    starts as the identity (:meth:`reset_parameters`, also called by excite's models).

    Args:
        channels: C, the input channels.
        mode: "l2" (the paper's default) or "l1".
        epsilon: eps, the small constant inside the roots (the authors' 1e-5).

    Attributes:
        alpha, gamma, beta: the (C,) embedding weight, gating weight and gating bias.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a non-positive channels or epsilon, or an unknown mode.
    """

    def __init__(self, channels: int, *, mode: str = "l2", epsilon: float = 1e-5) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.mode = check_choice(mode, MODES, name="mode")
        self.epsilon = float(check_number(epsilon, name="epsilon", minimum=0, strict_minimum=True))
        self.alpha = nn.Parameter(torch.empty(channels))
        self.gamma = nn.Parameter(torch.empty(channels))
        self.beta = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: alpha = 1, gamma = 0, beta = 0 (gate = 1)."""
        nn.init.ones_(self.alpha)
        nn.init.zeros_(self.gamma)
        nn.init.zeros_(self.beta)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel map ``1 + tanh(gamma ŝ + beta)`` in (0, 2), shape (N, C, 1, ..., 1)."""
        check_input(x, module="GCT", channels=self.channels, dtype=self.alpha.dtype)
        acc = accumulate_dtype(x.dtype)
        axes = spatial_axes(x.ndim)
        alpha, gamma, beta = (p.to(acc) for p in (self.alpha, self.gamma, self.beta))
        if self.mode == "l2":
            norm = torch.linalg.vector_norm(x, 2, dim=axes, dtype=acc)  # (N, C)
            s = alpha * torch.sqrt(norm.square() + self.epsilon)
            s_hat = math.sqrt(self.channels) * s / torch.sqrt(
                s.square().sum(1, keepdim=True) + self.epsilon
            )
        else:
            s = alpha * torch.linalg.vector_norm(x, 1, dim=axes, dtype=acc)
            s_hat = self.channels * s / (s.abs().sum(1, keepdim=True) + self.epsilon)
        g = 1.0 + torch.tanh(gamma * s_hat + beta)
        return g.to(x.dtype).reshape(*g.shape, *([1] * (x.ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        return x * self.gate(x)
