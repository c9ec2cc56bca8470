"""Concurrent spatial and channel squeeze-and-excitation (Roy et al., "Concurrent
Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional Networks", MICCAI 2018)."""

from __future__ import annotations

import torch
from torch import nn

from ._common import check_channels, check_choice, check_input, resolve_activation
from .rank import check_spatial_dims, conv_nd
from .registry import register_attention
from .squeeze_excite import SqueezeExcite

COMBINES = ("add", "max")


class SpatialSqueezeExcite(nn.Module):
    """sSE (Roy et al. 2018): ``q = sigma(W_sq * x)``, a 1x...x1 convolution C→1 (with bias)
    and a gate, giving a (N, 1, *spatial) map; ``forward(x) = x * q``.

    Args:
        channels: C, the input channels.
        spatial_dims: d, 1, 2 or 3.
        gate: sigma, a name or an ``nn.Module`` class.
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.conv = conv_nd(spatial_dims)(channels, 1, kernel_size=1)
        self.gate_act = resolve_activation(gate, name="gate")

    def _check(self, x: torch.Tensor) -> None:
        check_input(
            x, module="SpatialSqueezeExcite", channels=self.channels, ndim=self.spatial_dims + 2,
            dtype=self.conv.weight.dtype,
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial map q, shape (N, 1, *spatial)."""
        self._check(x)
        return self._gate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * q``, same shape and dtype as ``x``."""
        self._check(x)
        return x * self._gate(x)

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`gate` without the input check."""
        return self.gate_act(self.conv(x))


@register_attention("scse")
class SCSE(nn.Module):
    """scSE: channel SE and spatial SE applied to the same input, then combined.

    ``cSE(x) = x ⊙ sigma(W2 relu(W1 mean(x)))`` (SE with biases, W1 in R^{C/r x C}),
    ``sSE(x) = x ⊙ sigma(W_sq * x)`` (1x...x1 conv C→1), and
    ``combine="add"``: ``cSE(x) + sSE(x)`` (the paper);
    ``combine="max"``: ``max(cSE(x), sSE(x))`` element-wise (the authors' released code)::

        x ──┬─ channel (cSE) ─┐
            └─ spatial (sSE) ─┴─ add | max ── y

    Args:
        channels: C, the input channels.
        spatial_dims: d, 1, 2 or 3 (rank of the sSE convolution).
        reduction: r of the cSE bottleneck (``channels // reduction`` hidden units).
        combine: "add" or "max".

    Attributes:
        channel: the cSE branch (:class:`SqueezeExcite`).
        spatial: the sSE branch (:class:`SpatialSqueezeExcite`).

    Raises:
        TypeError, ValueError: bad channels, spatial_dims, reduction or combine.
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        reduction: float = 16,
        combine: str = "add",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.combine = check_choice(combine, COMBINES, name="combine")
        self.channel = SqueezeExcite(channels, reduction=reduction)
        self.spatial = SpatialSqueezeExcite(channels, spatial_dims=spatial_dims)

    def _check(self, x: torch.Tensor) -> None:
        check_input(
            x, module="SCSE", channels=self.channels, ndim=self.spatial_dims + 2,
            dtype=self.channel.fc1.weight.dtype,
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The map m, shape (N, C, *spatial), with ``forward(x) == x * m``: the sum of
        the two gates ("add"), or per element the gate whose product is larger ("max")."""
        self._check(x)
        c, s = self.channel._gate(x), self.spatial._gate(x)  # unchecked: checked above
        if self.combine == "add":
            return c + s
        return torch.where(x * c >= x * s, c, s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The recalibrated features, same shape and dtype as ``x``. The input is checked
        once; the cSE branch chooses its implementation as :class:`SqueezeExcite` does."""
        self._check(x)
        xc, xs = self.channel._run(x), x * self.spatial._gate(x)
        if self.combine == "add":
            return xc + xs
        return torch.maximum(xc, xs)
