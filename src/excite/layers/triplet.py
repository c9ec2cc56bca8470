"""Triplet attention (Misra, Nalamada, Arasanipalai & Hou, "Rotate to Attend:
Convolutional Triplet Attention Module", WACV 2021)."""

from __future__ import annotations

import torch
from torch import nn

from ._common import check_bool, check_channels, check_input, check_kernel_size, resolve_activation
from .rank import batch_norm_nd, check_spatial_dims, conv_nd, spatial_axes, stable_mean
from .registry import register_attention


def z_pool(x: torch.Tensor) -> torch.Tensor:
    """Triplet attention's Z-pool over dim 1: ``[max_1(x); mean_1(x)]``, (N, K, ...) ->
    (N, 2, ...) (the mean accumulates in float32 for half inputs)."""
    return torch.cat([x.amax(1, keepdim=True), stable_mean(x, 1, keepdim=True)], dim=1)


class ZPoolGate(nn.Module):
    """One triplet branch's gate ``sigma(BN(conv_{k^d}(Z-pool(t))))`` on a (N, K, *plane)
    tensor: Z-pool over K, a ``k^d`` convolution 2→1 (no bias, "same" padding),
    optional BatchNorm (the authors' momentum 0.01), gate -> (N, 1, *plane).

    Args:
        spatial_dims: d, the rank of the plane.
        kernel_size: k, odd.
        norm: the BatchNorm.
        gate: sigma (name or ``nn.Module`` class).
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        kernel_size: tuple[int, ...],
        norm: bool,
        gate: str | type[nn.Module],
    ) -> None:
        super().__init__()
        padding = tuple(k // 2 for k in kernel_size)
        self.conv = conv_nd(spatial_dims)(2, 1, kernel_size, padding=padding, bias=False)
        self.norm = batch_norm_nd(spatial_dims)(1, momentum=0.01) if norm else nn.Identity()
        self.gate_act = resolve_activation(gate, name="gate")

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.gate_act(self.norm(self.conv(z_pool(t))))


@register_attention("triplet")
class TripletAttention(nn.Module):
    """Triplet attention: cross-dimension gates from rotated views of the input, averaged.

    Misra et al. 2021: every branch rotates the (C, H, W) tensor so that one dimension
    becomes the "channel" of a Z-pool, pools it away (``[max; mean]``), convolves the
    remaining 2D plane with a k×k kernel, gates the result and rotates back; the output
    is the average of the branches,
    ``y = 1/3 (x̂_1 ⊙ σ(ψ_1(x̂_1*)) + x̂_2 ⊙ σ(ψ_2(x̂_2*)) + x ⊙ σ(ψ_3(x̂_3)))``. The
    (C, W) branch pools H, the (H, C) branch pools W, the spatial branch pools C.

    At rank d (spatial axes a = 1..d) there are d + 1 branches: for each axis a the
    channel axis C takes a's place, a is Z-pooled, and a ``k^d`` convolution runs over
    the resulting d-dimensional plane (C and the other spatial axes); the spatial branch
    pools C and convolves the d spatial axes (in 2D: the paper's three branches with the
    authors' plane orders (C, W), (H, C), (H, W); in 1D two, in 3D four). Because a
    rotation back is exact, each branch is ``x ⊙ g_b`` and ``y = x ⊙ mean_b(g_b)``::

        x ──┬───────────────────────────────────────────────────── ⊙ ── y
            ├─ swap(C, axis 1) ─ Z-pool ─ conv k^d ─ BN ─ gate ─┐   │
            ├─ ...                                             ├─ mean
            ├─ swap(C, axis d) ─ Z-pool ─ conv k^d ─ BN ─ gate ─┤
            └─ Z-pool over C ── conv k^d ─ BN ─ gate ───────────┘

    Parameters: ``(d + 1)·(2·k^d + 2)`` (``2·k^d`` per branch without the norm), e.g.
    300 in 2D with k = 7; ``spatial=False`` drops the spatial branch (the authors'
    ``no_spatial``).

    Args:
        channels: C, checked against the input when given; None accepts any C.
        spatial_dims: d, 1, 2 or 3.
        kernel_size: k, odd (the paper's 7), the same for every branch.
        spatial: include the spatial (C-pooled) branch.
        norm: BatchNorm after each branch's convolution (the authors' code has it).
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.

    Attributes:
        axis_gates: one :class:`ZPoolGate` per spatial axis, in axis order.
        spatial_gate: the spatial branch's :class:`ZPoolGate`, or None.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/spatial_dims, an even or non-positive kernel_size, or
            an unknown gate name.
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        spatial_dims: int = 2,
        kernel_size: int = 7,
        spatial: bool = True,
        norm: bool = True,
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = None if channels is None else check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool):
            raise TypeError(
                f"kernel_size must be an odd int (one k for every branch's plane), got "
                f"{kernel_size!r}"
            )
        kernel = check_kernel_size(kernel_size, spatial_dims)
        check_bool(spatial, name="spatial")
        check_bool(norm, name="norm")
        self.kernel_size = kernel_size
        branch = dict(spatial_dims=spatial_dims, kernel_size=kernel, norm=norm, gate=gate)
        self.axis_gates = nn.ModuleList(ZPoolGate(**branch) for _ in range(spatial_dims))
        self.spatial_gate = ZPoolGate(**branch) if spatial else None

    def gate(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The branch gates for input (N, C, *spatial), axis branches first: the one for
        spatial axis a has shape (N, C, ..., 1, ...) with the 1 at dimension a + 2; the
        spatial branch's (last, when present) is (N, 1, *spatial).
        ``forward(x) == x * sum(gates) / len(gates)``."""
        check_input(x, module="TripletAttention", channels=self.channels,
                    ndim=self.spatial_dims + 2, dtype=self.axis_gates[0].conv.weight.dtype)
        gates = [
            # swap C into axis a's place, Z-pool a (now dim 1), gate the plane, swap back
            branch(x.transpose(1, a)).transpose(1, a)
            for branch, a in zip(self.axis_gates, spatial_axes(x.ndim))
        ]
        if self.spatial_gate is not None:
            gates.append(self.spatial_gate(x))
        return tuple(gates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The average of the branch outputs, same shape and dtype as ``x``."""
        gates = self.gate(x)
        return x * (sum(gates[1:], gates[0]) / len(gates))
