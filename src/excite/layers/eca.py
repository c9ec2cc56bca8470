"""Efficient Channel Attention (Wang et al., "ECA-Net: Efficient Channel Attention for
Deep Convolutional Neural Networks", CVPR 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._common import (
    check_channels,
    check_choice,
    check_input,
    check_positive_int,
    resolve_activation,
)
from .rank import global_avg_pool
from .registry import register_attention

PADDING_MODES = ("zeros", "circular")


def eca_kernel_size(channels: int, *, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size (paper eq. 12): ``t = int(|(log2(C) + b) / gamma|)``,
    ``k = t`` if t is odd else ``t + 1``; e.g. C=64 -> 3, 256 -> 5, 2048 -> 7."""
    t = int(abs((math.log2(check_channels(channels)) + b) / gamma))
    return t if t % 2 else t + 1


@register_attention("eca")
class ECA(nn.Module):
    """Efficient Channel Attention: a 1D convolution across the pooled channel vector.

    ``omega = sigma(C1D_k(y))``, ``y = GAP(x)`` (Wang et al. 2020, eq. 11): every channel's
    weight depends on its k neighbours, with k shared weights and no dimensionality
    reduction::

        x ──┬───────────────────────────────────────── ⊙ ── y
            └─ mean ─ conv1d k over channels (1→1) ─ gate

    ``padding_mode="zeros"`` (the paper) pads the channel vector y with k//2 zeros at both
    ends; ``"circular"`` wraps it around, ``y_{-j} = y_{C-j}``, so the first and last
    channels are neighbours (timm's ``CircularEfficientChannelAttn``, registered as
    ``"ceca"``: :class:`CircularECA`).

    Args:
        channels: C; needed when ``kernel_size`` is None, and checked against the input
            when given. None accepts any C (then ``kernel_size`` is required).
        kernel_size: k, odd >= 1; None derives it from C (:func:`eca_kernel_size`).
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.
        padding_mode: how the channel vector is padded for the convolution, "zeros" or
            "circular".

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: both channels and kernel_size None, an even/non-positive
            kernel_size, an unknown gate name or padding_mode, or a circular padding
            k//2 larger than channels (it would wrap around more than once).
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        kernel_size: int | None = None,
        gate: str | type[nn.Module] = "sigmoid",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.channels = None if channels is None else check_channels(channels)
        if kernel_size is None:
            if channels is None:
                raise ValueError(
                    "ECA needs channels or kernel_size: kernel_size=None derives k from "
                    "channels, but channels is None"
                )
            kernel_size = eca_kernel_size(channels)
        check_positive_int(kernel_size, name="kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size!r}")
        self.padding_mode = check_choice(padding_mode, PADDING_MODES, name="padding_mode")
        if padding_mode == "circular" and channels is not None and kernel_size // 2 > channels:
            raise ValueError(
                f"padding_mode='circular' pads the {channels} channels by kernel_size // 2 = "
                f"{kernel_size // 2} on each side, more than one wrap; use kernel_size <= "
                f"{2 * channels + 1}, got kernel_size={kernel_size}"
            )
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(
            1, 1, kernel_size, padding=kernel_size // 2, padding_mode=padding_mode, bias=False
        )
        self.gate_act = resolve_activation(gate, name="gate")

    def _check(self, x: torch.Tensor) -> None:
        check_input(x, module=type(self).__name__, channels=self.channels, dtype=self.conv.weight.dtype)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel map omega, shape (N, C, 1, ..., 1), for input (N, C, *spatial)."""
        self._check(x)
        return self._gate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        self._check(x)
        return x * self._gate(x)

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`gate` without the input check."""
        y = global_avg_pool(x).unsqueeze(1)  # (N, 1, C): channels as a 1D sequence
        s = self.gate_act(self.conv(y)).squeeze(1)  # (N, C)
        return s.reshape(*s.shape, *([1] * (x.ndim - 2)))


@register_attention("ceca")
class CircularECA(ECA):
    """ECA with circular padding of the channel vector (``ECA(..., padding_mode="circular")``):
    ``omega_i = sigma(sum_j w_j y_{(i + j - k//2) mod C})``, as timm's
    ``CircularEfficientChannelAttn``. Arguments as :class:`ECA`."""

    def __init__(
        self,
        channels: int | None = None,
        *,
        kernel_size: int | None = None,
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__(channels, kernel_size=kernel_size, gate=gate, padding_mode="circular")
