"""Bottleneck Attention Module (Park et al., "BAM: Bottleneck Attention Module", BMVC 2018)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import (
    check_channels,
    check_input,
    check_kernel_size,
    check_positive_int,
    check_reduction,
    hidden_width,
    resolve_activation,
)
from .rank import batch_norm_nd, check_spatial_dims, conv_nd, global_avg_pool
from .registry import register_attention


@register_attention("bam")
class BAM(nn.Module):
    """Bottleneck Attention Module: a channel and a spatial branch summed into one 3D map.

    Park et al. 2018, eq. 1-4::

        M(F)   = sigma(M_c(F) + M_s(F))                    (broadcast to C x *spatial)
        F'     = F + F ⊙ M(F)
        M_c(F) = BN(W1 delta(W0 AvgPool(F) + b0) + b1)     W0 in R^{C/r x C}, W1 in R^{C x C/r}
        M_s(F) = BN(f3^{1x1}(f2^{3x3}(f1^{3x3}(f0^{1x1}(F)))))

        F ──┬────────────────────────────────────────────────────────────────┬─(+)── F'
            ├─ mean ─ fc1 (C→C/r) ─ act ─ fc2 (C/r→C) ─ BN ──────────── M_c ─┐│
            └─ 1x1 (C→C/r) ─ [3^d dilated (C/r→C/r)] x 2 ─ 1x1 (C/r→1) ─ BN ─ M_s ─ Σ ─ gate ─ ⊙

    f0 reduces C to C/r channels, f1 and f2 are 3^d convolutions with dilation d_s (4 in
    the paper), f3 reduces to one channel; between the convolutions sit BatchNorm and
    ReLU, as in the authors' code (the equation leaves them implicit). At rank d the
    convolutions are d-dimensional; the map M(F) has the input's shape.

    The paper places BAM once at each bottleneck of the network (the end of a stage,
    before the next one downsamples), so the class declares ``attention_placement =
    "stage"``: excite's ResNets put it under ``layerS.attention``. The paper's ResNets use
    the first three of four stages: ``attention_stages=(1, 2, 3)``.

    Args:
        channels: C, the input channels.
        spatial_dims: d, 1, 2 or 3.
        reduction: r, shared by both branches (16 in the paper).
        dilation: d_s, the dilation of the spatial branch's convolutions (4 in the paper).
        num_dilated: how many dilated convolutions (2 in the paper).
        kernel_size: their kernel size (3, odd; an int or a d-tuple).
        activation: delta, a name ("relu", ...) or an ``nn.Module`` class.
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.

    Attributes:
        channel: the channel branch M_c (``fc1``, ``act``, ``fc2``, ``norm``).
        spatial: the spatial branch M_s (``reduce``, ``dilated0``, ..., ``final``, ``norm``).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/spatial_dims/reduction/dilation/num_dilated, an even
            kernel_size, a hidden width of 0, or an unknown activation/gate name.
    """

    attention_placement = "stage"

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        reduction: float = 16,
        dilation: int = 4,
        num_dilated: int = 2,
        kernel_size: int | tuple[int, ...] = 3,
        activation: str | type[nn.Module] = "relu",
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        check_reduction(reduction)
        hidden = hidden_width(channels, reduction, module="BAM")
        check_positive_int(dilation, name="dilation")
        check_positive_int(num_dilated, name="num_dilated")
        kernel = check_kernel_size(kernel_size, spatial_dims)
        conv, norm = conv_nd(spatial_dims), batch_norm_nd(spatial_dims)

        self.channel = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(channels, hidden)),
            ("act", resolve_activation(activation, name="activation")),
            ("fc2", nn.Linear(hidden, channels)),
            ("norm", nn.BatchNorm1d(channels)),
        ]))
        layers: list[tuple[str, nn.Module]] = [
            ("reduce", conv(channels, hidden, kernel_size=1)),
            ("reduce_norm", norm(hidden)),
            ("reduce_act", resolve_activation(activation, name="activation")),
        ]
        padding = tuple(dilation * (k // 2) for k in kernel)
        for i in range(num_dilated):
            layers += [
                (f"dilated{i}", conv(hidden, hidden, kernel, padding=padding, dilation=dilation)),
                (f"dilated{i}_norm", norm(hidden)),
                (f"dilated{i}_act", resolve_activation(activation, name="activation")),
            ]
        layers += [("final", conv(hidden, 1, kernel_size=1)), ("norm", norm(1))]
        self.spatial = nn.Sequential(OrderedDict(layers))
        self.gate_act = resolve_activation(gate, name="gate")

    def channel_map(self, x: torch.Tensor) -> torch.Tensor:
        """M_c(F) before the gate, shape (N, C, 1, ..., 1)."""
        c = self.channel(global_avg_pool(x))
        return c.reshape(*c.shape, *([1] * self.spatial_dims))

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """M_s(F) before the gate, shape (N, 1, *spatial)."""
        return self.spatial(x)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map M(F) = sigma(M_c + M_s), shape (N, C, *spatial); note that
        ``forward(x) == x * (1 + gate(x))``."""
        check_input(x, module="BAM", channels=self.channels, ndim=self.spatial_dims + 2,
                    dtype=self.channel.fc1.weight.dtype)
        return self.gate_act(self.channel_map(x) + self.spatial_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F' = F + F ⊙ M(F), same shape and dtype as ``x``."""
        return x + x * self.gate(x)
