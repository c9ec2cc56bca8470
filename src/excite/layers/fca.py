"""Multi-spectral channel attention (Qin et al., "FcaNet: Frequency Channel Attention
Networks", ICCV 2021)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from excite.checks import is_int

from ._common import (
    check_bool,
    check_channels,
    check_input,
    check_reduction,
    hidden_width,
    resolve_activation,
)
from .rank import accumulate_dtype, check_spatial_dims, ntuple, spatial_axes
from .registry import register_attention

#: the grid the paper ranks frequencies on: 7 per axis (ResNet's last stage at 224²)
GRID = 7

# The paper's frequency orders on the 7 x 7 grid, as (u along H, v along W) pairs:
# "top" and "bot" rank every single frequency by the ImageNet accuracy it gives alone
# (Qin et al. 2021, Sec. 4.2 / Fig. 4, the authors' released tables), "low" walks the
# grid from the DC corner outwards.
_TOP = tuple(zip(
    (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1),
    (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3),
))
_LOW = tuple(zip(
    (0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4),
    (0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3),
))
_BOT = tuple(zip(
    (6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6),
    (6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3),
))
FREQUENCY_TABLES: dict[str, tuple[tuple[int, int], ...]] = {"top": _TOP, "low": _LOW, "bot": _BOT}
#: the selection sizes the paper evaluates
SELECTION_SIZES = (1, 2, 4, 8, 16, 32)
_NAME = re.compile(r"^(top|low|bot)(\d+)$")


def select_frequencies(
    frequencies: str | Sequence[Sequence[int]],
    *,
    spatial_dims: int,
    dct_size: tuple[int, ...],
) -> tuple[tuple[int, ...], ...]:
    """The frequency multi-indices, one ``spatial_dims``-tuple per channel group.

    A name ``"top16"`` / ``"low4"`` / ``"bot32"`` (k in 1, 2, 4, 8, 16, 32) takes the
    paper's first k (u, v) pairs of that order on the 7 x 7 grid and lifts them to the
    rank: (u, v) on (H, W) at rank 2; (0, u, v) at rank 3 (DC along T, the paper's
    spectrum on H x W); (v,) at rank 1 (a signal is a one-row image, whose H-frequency
    is 0, so the authors' rule below maps every u to 0). Like the authors' code, each
    index is then scaled by ``dct_size // 7`` on its axis, so a 14-point axis uses
    frequency 2u (the same pattern as u on 7 points). An explicit sequence of
    ``spatial_dims``-tuples is used as given (no scaling).

    Raises:
        ValueError: an unknown name, a tuple of the wrong length, an index outside
            ``[0, dct_size)``, or a named selection on a ``dct_size`` below 7.
        TypeError: neither a name nor a sequence of int tuples.
    """
    if isinstance(frequencies, str):
        match = _NAME.match(frequencies)
        if match is None or int(match.group(2)) not in SELECTION_SIZES:
            raise ValueError(
                "frequencies must be 'top<k>', 'low<k>' or 'bot<k>' with k in "
                f"{SELECTION_SIZES}, or a sequence of {spatial_dims}-tuples of ints, "
                f"got {frequencies!r}"
            )
        pairs = FREQUENCY_TABLES[match.group(1)][: int(match.group(2))]
        lifted = [(v,) if spatial_dims == 1 else (0,) * (spatial_dims - 2) + (u, v) for u, v in pairs]
        carrying = range(spatial_dims - 2 if spatial_dims >= 2 else 0, spatial_dims)
        small = [a for a in carrying if dct_size[a] < GRID]
        if small:
            raise ValueError(
                f"dct_size must be >= {GRID} on the axes a named selection indexes "
                f"(it ranks frequencies on a {GRID}-point grid), got dct_size={dct_size}; "
                "pass explicit frequencies for smaller sizes"
            )
        scale = tuple(size // GRID for size in dct_size)
        return tuple(tuple(f * s for f, s in zip(freq, scale)) for freq in lifted)
    if isinstance(frequencies, (str, bytes)) or not isinstance(frequencies, Sequence) or not frequencies:
        raise TypeError(
            f"frequencies must be a selection name ('top16', ...) or a non-empty sequence of "
            f"{spatial_dims}-tuples of ints, got {frequencies!r}"
        )
    out = []
    for freq in frequencies:
        if not isinstance(freq, Sequence) or not all(is_int(f) for f in freq):
            raise TypeError(
                f"frequencies must hold {spatial_dims}-tuples of ints, got {freq!r} in {frequencies!r}"
            )
        if len(freq) != spatial_dims:
            raise ValueError(
                f"frequencies must hold {spatial_dims}-tuples for spatial_dims={spatial_dims}, "
                f"got {tuple(freq)!r}"
            )
        if any(f < 0 or f >= size for f, size in zip(freq, dct_size)):
            raise ValueError(
                f"frequencies must lie in [0, dct_size) on every axis (dct_size={dct_size}), "
                f"got {tuple(freq)!r}"
            )
        out.append(tuple(freq))
    return tuple(out)


def dct_basis(frequencies: torch.Tensor, size: int, *, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II rows: ``b_u(p) = c_u cos(pi u (p + 1/2) / D)`` with
    ``c_0 = sqrt(1/D)``, ``c_u = sqrt(2/D)``; frequencies (K,) -> (K, D)."""
    p = torch.arange(size, dtype=dtype, device=frequencies.device)
    u = frequencies.to(dtype).unsqueeze(1)
    rows = torch.cos(math.pi * u * (p + 0.5) / size) * math.sqrt(2.0 / size)
    return torch.where(u == 0, rows / math.sqrt(2.0), rows)


def average_pool_matrix(size_in: int, size_out: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Adaptive average pooling of one axis as a (size_out, size_in) matrix: row p
    averages positions ``floor(p S / D) <= s < ceil((p + 1) S / D)`` (PyTorch's windows)."""
    p = torch.arange(size_out, device=device)
    start = torch.div(p * size_in, size_out, rounding_mode="floor")
    end = torch.div((p + 1) * size_in + size_out - 1, size_out, rounding_mode="floor")
    s = torch.arange(size_in, device=device)
    inside = (s >= start.unsqueeze(1)) & (s < end.unsqueeze(1))
    return inside.to(dtype) / (end - start).to(dtype).unsqueeze(1)


@register_attention("fca")
class MultiSpectralAttention(nn.Module):
    """FcaNet's multi-spectral channel attention: SE with DCT frequencies for the squeeze.

    Qin et al. 2021, eq. 8-10: the channels are split into K groups; group i is pooled
    with one d-dimensional DCT basis function ``B^{f_i}`` (GAP is the DC term, f = 0)::

        Freq_c = sum_p X_c(p) B^{f_i}(p)         for c in group i       (eq. 8-9)
        ms_att = sigma(W2 delta(W1 Freq))                                 (eq. 10)
        y = x ⊙ ms_att

        x ──┬──────────────────────────────────────────────────────── ⊙ ── y
            └─ Σ_p x · B^{f(c)} ─ fc1 (C→C/r) ─ act ─ fc2 (C/r→C) ─ gate ┘

    ``B^f(p) = prod_a b_{f_a}(p_a)`` is the separable orthonormal DCT-II of size
    ``dct_size`` (the authors' code); at rank d it is the d-dimensional DCT. The paper
    pools a map of another size to ``dct_size`` first (adaptive average pooling); here
    that pooling is folded into the basis (``B' = P^T B`` per axis, exact), so no pooled
    copy of x is made. The K frequencies come from the paper's 7 x 7 rankings
    (:func:`select_frequencies`: "top16" by default, lifted to rank 1 and 3; at rank 3
    the default DCT has size 1 along T: the paper's spectrum of the temporal mean).
    Channel c uses frequency ``floor(c K / C)``: K equal groups when K divides C, as in
    the paper, and groups one channel apart in size otherwise.

    Args:
        channels: C, the input channels (at least the number of frequencies).
        spatial_dims: d, 1, 2 or 3 (the DCT's rank).
        reduction: r; the hidden width is ``channels // reduction``.
        frequencies: a selection name ("top16", "low4", "bot2", ...) or a sequence of
            d-tuples (the frequency indices f_i, each in ``[0, dct_size)``).
        dct_size: D, the DCT size per axis (an int or a d-tuple). None: 7 (the paper's
            7 x 7 frequency space) on every axis, except T at rank 3 for a named
            selection, which gets 1: its frequency there is 0, so the clip is averaged
            over time (a clip of identical frames gives the 2D module's map). The
            paper's ImageNet models use each stage's own size (56, 28, 14, 7), which
            selects the same frequencies scaled by D // 7.
        bias: biases in the two linear layers (the authors' code has none).
        activation: delta, a name ("relu", ...) or an ``nn.Module`` class.
        gate: sigma, a name ("sigmoid", ...) or an ``nn.Module`` class.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/spatial_dims/reduction/dct_size, fewer channels than
            frequencies, a hidden width of 0, or a bad frequency selection.
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        reduction: float = 16,
        frequencies: str | Sequence[Sequence[int]] = "top16",
        dct_size: int | tuple[int, ...] | None = None,
        bias: bool = False,
        activation: str | type[nn.Module] = "relu",
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if dct_size is None:
            named = isinstance(frequencies, str) and spatial_dims == 3
            dct_size = (1, GRID, GRID) if named else GRID
        self.dct_size = ntuple(dct_size, spatial_dims, name="dct_size")
        if any(size < 1 for size in self.dct_size):
            raise ValueError(f"dct_size must be >= 1 on every axis, got {dct_size!r}")
        self.frequencies = select_frequencies(
            frequencies, spatial_dims=spatial_dims, dct_size=self.dct_size
        )
        groups = len(self.frequencies)
        if channels < groups:
            raise ValueError(
                f"channels must be >= the number of frequencies ({groups}, one channel group "
                f"each), got channels={channels}; pick fewer frequencies (e.g. 'top{1 << (channels.bit_length() - 1)}')"
            )
        check_reduction(reduction)
        hidden = hidden_width(channels, reduction, module="MultiSpectralAttention")
        check_bool(bias, name="bias")
        # fixed, not learned: recomputed for each input size, never saved in a state dict
        self.register_buffer(
            "frequency_index", torch.tensor(self.frequencies, dtype=torch.long), persistent=False
        )
        self.register_buffer(
            "channel_group", torch.arange(channels) * groups // channels, persistent=False
        )
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.act = resolve_activation(activation, name="activation")
        self.fc2 = nn.Linear(hidden, channels, bias=bias)
        self.gate_act = resolve_activation(gate, name="gate")

    def basis(self, spatial: Sequence[int], *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The per-channel pooling weights ``B'_c``, shape (C, *spatial), for an input of
        that spatial size (the DCT of size ``dct_size`` with adaptive pooling folded in)."""
        device = self.frequency_index.device
        weights: torch.Tensor | None = None
        for axis, (size, dct) in enumerate(zip(spatial, self.dct_size)):
            rows = dct_basis(self.frequency_index[:, axis], dct, dtype=dtype)  # (K, D)
            rows = rows @ average_pool_matrix(size, dct, dtype=dtype, device=device)  # (K, S_a)
            rows = rows[self.channel_group]  # (C, S_a)
            shape = [self.channels] + [1] * self.spatial_dims
            shape[1 + axis] = size
            rows = rows.reshape(shape)
            weights = rows if weights is None else weights * rows
        assert weights is not None
        return weights

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel map ms_att, shape (N, C, 1, ..., 1), for input (N, C, *spatial)."""
        check_input(
            x, module="MultiSpectralAttention", channels=self.channels, ndim=self.spatial_dims + 2,
            dtype=self.fc1.weight.dtype,
        )
        precision = torch.float64 if x.dtype == torch.float64 else torch.float32
        weights = self.basis(x.shape[2:], dtype=precision).to(x.dtype)
        freq = (x * weights).sum(spatial_axes(x.ndim), dtype=accumulate_dtype(x.dtype))
        s = self.gate_act(self.fc2(self.act(self.fc1(freq.to(x.dtype)))))
        return s.reshape(*s.shape, *([1] * self.spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(x)``, same shape and dtype as ``x``."""
        return x * self.gate(x)
