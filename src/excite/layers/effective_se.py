"""Effective Squeeze-Excitation (Lee & Park, "CenterMask: Real-Time Anchor-Free Instance
Segmentation", CVPR 2020: the eSE module of VoVNetV2)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ._common import check_bool, check_channels, check_input, resolve_activation
from .rank import global_avg_pool
from .registry import register_attention
from .timm_keys import rename_prefixes


@register_attention("ese")
class EffectiveSqueezeExcite(nn.Module):
    """Effective SE: SE with one C→C fully connected layer instead of the C→C/r→C pair.

    Lee & Park 2020: ``A_eSE(X) = sigma(W_C(F_gap(X)))``, ``X_refine = A_eSE ⊙ X``,
    with W_C in R^{C x C} (plus bias) and sigma the hard sigmoid ``relu6(t + 3) / 6``.
    Keeping all C channels avoids the information loss of SE's reduction::

        x ──┬───────────────────────────────────── ⊙ ── y
            └─ mean ─ fc (C→C) ─ gate (hard sigmoid) ┘

    Works on (N, C, L), (N, C, H, W) and (N, C, T, H, W): the pooled descriptor is a
    vector for every rank. Parameters: ``C² + C`` (``C²`` without bias).

    Args:
        channels: C, the input channels.
        bias: the bias of W_C (the paper's 1×1 convolution has one).
        gate: sigma, a name ("hard_sigmoid", "sigmoid", ...) or an ``nn.Module`` class.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a non-positive channels, or an unknown gate name.
    """

    def __init__(
        self,
        channels: int,
        *,
        bias: bool = True,
        gate: str | type[nn.Module] = "hard_sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        check_bool(bias, name="bias")
        self.fc = nn.Linear(channels, channels, bias=bias)
        self.gate_act = resolve_activation(gate, name="gate")

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel map A_eSE, shape (N, C, 1, ..., 1), for input (N, C, *spatial)."""
        check_input(x, module="EffectiveSqueezeExcite", channels=self.channels,
                    dtype=self.fc.weight.dtype)
        s = self.gate_act(self.fc(global_avg_pool(x)))  # (N, C)
        return s.reshape(*s.shape, *([1] * (x.ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        return x * self.gate(x)


def effective_se_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``EffectiveSEModule`` state dict with :class:`EffectiveSqueezeExcite`'s
    keys: ``fc.weight`` (C, C, 1, 1) -> (C, C), ``fc.bias`` as is. Load it into
    ``EffectiveSqueezeExcite(C)`` (the defaults are timm's: bias, hard sigmoid).

    Raises:
        ValueError: a key that is not part of timm's module.
    """
    return rename_prefixes(state_dict, {"fc.": ("fc.", 1)}, module="EffectiveSEModule")
