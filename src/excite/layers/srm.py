"""Style-based Recalibration Module (Lee et al., "SRM: A Style-based Recalibration Module
for Convolutional Neural Networks", ICCV 2019)."""

from __future__ import annotations

import torch
from torch import nn

from excite.checks import check_number

from ._common import check_bool, check_channels, check_input, check_pools, resolve_activation
from .rank import accumulate_dtype, spatial_axes
from .registry import register_attention

STYLES = ("mean", "std")


@register_attention("srm")
class SRM(nn.Module):
    """Style-based recalibration: style pooling, channel-wise integration, BatchNorm, gate.

    Lee et al. 2019, eq. 1-6, per sample n and channel c::

        mu_nc = mean_p x_nc(p),  sigma_nc = [mean_p (x_nc(p) - mu_nc)^2 + eps]^(1/2)
        t_nc = [mu_nc, sigma_nc]                       (style pooling)
        z_nc = w_c · t_nc                              (channel-wise FC, W in R^{C x 2})
        g_nc = sigma(BN(z)_nc),  y = x ⊙ g             (style integration)

        x ──┬───────────────────────────────────────────────── ⊙ ── y
            ├─ mean ─┐                                          │
            └─ std ──┴─ Σ_j w_cj t_ncj (CFC) ─ BatchNorm ─ gate ┘

    Statistics run over every spatial axis (any rank), in float32 for fp16/bf16 input.
    The BatchNorm normalises z over the batch, so training needs more than one sample.

    Args:
        channels: C, the input channels.
        styles: the style features t in order, "mean" and/or "std" (the paper's ablation
            also uses each alone).
        unbiased: divide the variance by P - 1 (the authors' code, ``torch.var``; NaN for
            a single position, as there) instead of P positions (the paper's eq. 2).
        epsilon: eps, added to the variance before the root (the authors' 1e-5).
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.

    Attributes:
        cfc: the (C, len(styles)) channel-wise FC weight W.
        norm: the BatchNorm over the C integrated styles.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a non-positive channels or epsilon, or an unknown style/gate name.
    """

    def __init__(
        self,
        channels: int,
        *,
        styles: str | tuple[str, ...] = STYLES,
        unbiased: bool = False,
        epsilon: float = 1e-5,
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.styles = check_pools(styles, STYLES, name="styles")
        self.unbiased = check_bool(unbiased, name="unbiased")
        self.epsilon = float(check_number(epsilon, name="epsilon", minimum=0))
        self.cfc = nn.Parameter(torch.empty(channels, len(self.styles)))
        self.norm = nn.BatchNorm1d(channels)
        self.gate_act = resolve_activation(gate, name="gate")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialisation: W = 0 (every channel starts at gate(BN(0)))."""
        nn.init.zeros_(self.cfc)

    def style(self, x: torch.Tensor) -> torch.Tensor:
        """The style features t, shape (N, C, len(styles)), for input (N, C, *spatial)."""
        check_input(x, module="SRM", channels=self.channels, dtype=self.cfc.dtype)
        source = x.to(accumulate_dtype(x.dtype))
        axes = spatial_axes(x.ndim)
        if source.shape[0] == 0:  # an empty batch: empty statistics (var_mean would warn)
            var = mean = source.sum(axes)
        else:
            var, mean = torch.var_mean(source, dim=axes, correction=int(self.unbiased))
        features = {"mean": mean, "std": torch.sqrt(var + self.epsilon)}
        return torch.stack([features[s] for s in self.styles], dim=-1).to(x.dtype)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel map g, shape (N, C, 1, ..., 1), for input (N, C, *spatial)."""
        z = (self.style(x) * self.cfc).sum(-1)  # (N, C)
        g = self.gate_act(self.norm(z))
        return g.reshape(*g.shape, *([1] * (x.ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        return x * self.gate(x)
