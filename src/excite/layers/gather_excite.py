"""Gather-Excite (Hu, Shen, Albanie, Sun & Vedaldi, "Gather-Excite: Exploiting Feature
Context in Convolutional Neural Networks", NeurIPS 2018)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from ._common import (
    check_bool,
    check_channels,
    check_input,
    check_positive_int,
    check_reduction,
    hidden_width,
    resolve_activation,
)
from .rank import avg_pool, batch_norm_nd, check_spatial_dims, conv_nd, global_avg_pool, ntuple
from .registry import register_attention
from .timm_keys import rename_prefixes


def _check_extent(extent: object, *, learned_gather: bool) -> int | None:
    if extent is None:
        return None
    check_positive_int(extent, name="extent")
    if extent < 2:  # type: ignore[operator]
        raise ValueError(f"extent must be None (global) or an int >= 2, got {extent!r}")
    if learned_gather and extent & (extent - 1):  # type: ignore[operator]
        raise ValueError(
            "extent must be a power of two with learned_gather=True (log2(e) stride-2 "
            f"convolutions), got {extent!r}"
        )
    return extent  # type: ignore[return-value]


@register_attention("ge")
class GatherExcite(nn.Module):
    """Gather-Excite: gather context over a spatial extent, excite every position with it.

    Hu et al. 2018: ``y = x ⊙ sigma(interp(xi_G(x)))``. The gather operator
    xi_G aggregates each channel over neighbourhoods of extent e (the whole map for the
    global extent); the excite operator resizes the gathered map back to the input size
    by nearest-neighbour interpolation, gates it and multiplies::

        x ──┬────────────────────────────────────────────────────── ⊙ ── y
            └─ gather (extent e) ─ [mlp C→C/r→C] ─ gate ─ nearest ─┘

    The three variants of the paper:

    - GE-θ⁻ (``learned_gather=False``): parameter-free; the global extent is the spatial
      mean, extent e averages ``(2e−1)^d`` windows every e positions (zero padding
      ``e−1`` not counted), a ``⌈S/e⌉`` grid per axis.
    - GE-θ (``learned_gather=True``): log2(e) depth-wise ``3^d`` convolutions of stride 2
      (padding 1, no bias), each followed by BatchNorm, ReLU between them; the global
      extent is one depth-wise convolution whose kernel covers the whole
      ``feature_size`` map.
    - GE-θ⁺ (``learned_gather=True, mlp=True``): GE-θ followed by an SE-style 1×…×1
      bottleneck (C→C/r, ReLU, C/r→C, with biases) before the gate.

    At rank d every window, stride and kernel is the d-dimensional cube of the 2D one,
    so "extent e" keeps its meaning (each gathered value summarises an e×…×e cell).

    Args:
        channels: C, the input channels.
        spatial_dims: d, 1, 2 or 3.
        extent: e, None for the global extent, else an int >= 2 (a power of two with
            ``learned_gather``).
        learned_gather: the GE-θ gather (depth-wise convolutions) instead of pooling.
        mlp: the θ⁺ bottleneck after the gather (also allowed with pooling).
        reduction: r of the bottleneck; its width is ``channels // reduction``.
        hidden_channels: the bottleneck width directly (overrides ``reduction``).
        feature_size: the input's spatial size, an int or d ints; required by (and only
            used for) the learned global gather, whose kernel it is.
        norm: BatchNorm after each gather convolution (learned gather only).
        activation: the ReLU between gather convolutions and inside the bottleneck, a
            name or an ``nn.Module`` class.
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/spatial_dims/extent/reduction/hidden_channels, a
            missing or superfluous feature_size, or an unknown activation/gate name.
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        extent: int | None = None,
        learned_gather: bool = False,
        mlp: bool = False,
        reduction: float = 16,
        hidden_channels: int | None = None,
        feature_size: int | tuple[int, ...] | None = None,
        norm: bool = True,
        activation: str | type[nn.Module] = "relu",
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        check_bool(learned_gather, name="learned_gather")
        check_bool(mlp, name="mlp")
        check_bool(norm, name="norm")
        self.extent = _check_extent(extent, learned_gather=learned_gather)
        self.learned_gather = learned_gather
        global_learned = learned_gather and extent is None
        if global_learned and feature_size is None:
            raise ValueError(
                "feature_size is required for learned_gather=True with the global extent "
                "(extent=None): the depth-wise gather kernel covers the whole map"
            )
        if not global_learned and feature_size is not None:
            raise ValueError(
                "feature_size is only used by the learned global gather (learned_gather=True, "
                f"extent=None), got feature_size={feature_size!r} with "
                f"learned_gather={learned_gather}, extent={extent!r}"
            )
        self.feature_size = (
            None if feature_size is None
            else ntuple(feature_size, spatial_dims, name="feature_size")
        )
        if self.feature_size is not None:
            for size in self.feature_size:
                check_positive_int(size, name="feature_size")
        if learned_gather:
            self.gather = self._gather_convs(norm, activation)
        else:
            self.gather = None
        if mlp:
            check_reduction(reduction)
            hidden = (
                hidden_width(channels, reduction, module="GatherExcite")
                if hidden_channels is None
                else check_positive_int(hidden_channels, name="hidden_channels")
            )
            conv = conv_nd(spatial_dims)
            self.mlp = nn.Sequential(OrderedDict([
                ("fc1", conv(channels, hidden, kernel_size=1)),
                ("act", resolve_activation(activation, name="activation")),
                ("fc2", conv(hidden, channels, kernel_size=1)),
            ]))
        else:
            self.mlp = None
        self.gate_act = resolve_activation(gate, name="gate")

    def _gather_convs(self, norm: bool, activation: str | type[nn.Module]) -> nn.Sequential:
        """GE-θ's depth-wise gather: log2(e) stride-2 ``3^d`` convolutions, or one
        ``feature_size`` kernel for the global extent."""
        c, d = self.channels, self.spatial_dims
        conv, bn = conv_nd(d), batch_norm_nd(d)
        layers: list[tuple[str, nn.Module]] = []
        if self.extent is None:
            layers.append(("conv1", conv(c, c, self.feature_size, groups=c, bias=False)))
            if norm:
                layers.append(("norm1", bn(c)))
        else:
            count = int(math.log2(self.extent))
            for i in range(1, count + 1):
                layers.append((f"conv{i}", conv(c, c, 3, stride=2, padding=1, groups=c, bias=False)))
                if norm:
                    layers.append((f"norm{i}", bn(c)))
                if i < count:
                    layers.append((f"act{i}", resolve_activation(activation, name="activation")))
        return nn.Sequential(OrderedDict(layers))

    def _parameter_dtype(self) -> torch.dtype | None:
        """The weights' dtype, or None for the parameter-free GE-θ⁻ (any float input)."""
        if self.gather is not None:
            return self.gather.conv1.weight.dtype
        return None if self.mlp is None else self.mlp.fc1.weight.dtype

    def _gathered(self, x: torch.Tensor) -> torch.Tensor:
        """xi_G(x): (N, C, *spatial) -> (N, C, *grid), grid all ones for the global extent."""
        if self.gather is not None:
            if self.extent is None and tuple(x.shape[2:]) != self.feature_size:
                raise ValueError(
                    f"GatherExcite with feature_size={self.feature_size} (the learned global "
                    f"gather's kernel) expects inputs of that spatial size, got shape "
                    f"{tuple(x.shape)}"
                )
            return self.gather(x)
        if self.extent is None:
            return global_avg_pool(x, keepdim=True)
        e = self.extent
        return avg_pool(x, 2 * e - 1, stride=e, padding=e - 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation map ``sigma(interp(xi_G(x)))`` for input (N, C, *spatial):
        shape (N, C, 1, ..., 1) for the global extent, else (N, C, *spatial)."""
        check_input(x, module="GatherExcite", channels=self.channels, ndim=self.spatial_dims + 2,
                    dtype=self._parameter_dtype())
        g = self._gathered(x)
        if self.mlp is not None:
            g = self.mlp(g)
        s = self.gate_act(g)
        if any(size != 1 for size in s.shape[2:]):
            # nearest-neighbour resize commutes with the element-wise gate: gate first,
            # on the small grid
            s = nn.functional.interpolate(s, size=x.shape[2:], mode="nearest")
        return s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        return x * self.gate(x)


def gather_excite_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``GatherExcite`` state dict with :class:`GatherExcite`'s keys: the names
    and shapes are the same (``gather.conv{i}`` / ``gather.norm{i}``, ``mlp.fc1`` /
    ``mlp.fc2``); this checks that every key is one of them. Build the module with
    ``spatial_dims=2`` and timm's settings: ``extent`` (timm's 0 is None),
    ``learned_gather=extra_params``, ``mlp=use_mlp`` (timm's default True) and
    ``hidden_channels=max(1, int(C / 16 + 0.5))`` (timm's rounding of ``rd_ratio=1/16``).

    Raises:
        ValueError: a key that is not part of timm's module.
    """
    return rename_prefixes(
        state_dict, {"gather.": ("gather.", None), "mlp.": ("mlp.", None)}, module="GatherExcite"
    )
