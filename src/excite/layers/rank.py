"""Rank helpers: one code path for 1D, 2D and 3D.

A tensor of rank d + 2 is laid out (N, C, *spatial) with spatial = (L,), (H, W) or
(T, H, W). Modules look up their layer classes here by ``spatial_dims`` instead of
hard-coding ``Conv2d``; forwards reduce over :func:`spatial_axes` instead of ``(2, 3)``.
Means go through :func:`stable_mean`, the one float32-accumulating mean (defined in
:mod:`excite.kernels.ops`, shared with the fused paths, re-exported here).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from excite.kernels.ops import HALF_DTYPES, stable_mean

SPATIAL_DIMS = (1, 2, 3)

_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAX_POOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_ADAPTIVE_AVG_POOL: dict[int, type[nn.Module]] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
    3: nn.AdaptiveAvgPool3d,
}


def check_spatial_dims(spatial_dims: object, *, name: str = "spatial_dims") -> int:
    """Return ``spatial_dims`` if it is 1, 2 or 3, else raise naming the argument."""
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int):
        raise TypeError(f"{name} must be an int in {SPATIAL_DIMS}, got {spatial_dims!r}")
    if spatial_dims not in SPATIAL_DIMS:
        raise ValueError(f"{name} must be one of {SPATIAL_DIMS}, got {spatial_dims!r}")
    return spatial_dims


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d``."""
    return _CONV[check_spatial_dims(spatial_dims)]


def batch_norm_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` / ``nn.BatchNorm3d``."""
    return _BATCH_NORM[check_spatial_dims(spatial_dims)]


def max_pool_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.MaxPool1d`` / ``nn.MaxPool2d`` / ``nn.MaxPool3d``."""
    return _MAX_POOL[check_spatial_dims(spatial_dims)]


def adaptive_avg_pool_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.AdaptiveAvgPool{1,2,3}d`` (use :func:`spatial_axes` + ``mean`` in attention)."""
    return _ADAPTIVE_AVG_POOL[check_spatial_dims(spatial_dims)]


def spatial_axes(ndim: int) -> tuple[int, ...]:
    """The spatial axes of an (N, C, *spatial) tensor of rank ``ndim``: (2, ..., ndim-1)."""
    return tuple(range(2, ndim))


def ntuple(value: int | tuple[int, ...], spatial_dims: int, *, name: str) -> tuple[int, ...]:
    """Expand an int to a ``spatial_dims``-tuple; check a tuple has that length."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a tuple of {spatial_dims} ints, got {value!r}")
    if isinstance(value, int):
        return (value,) * spatial_dims
    if isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        if len(value) != spatial_dims:
            raise ValueError(
                f"{name} must have {spatial_dims} entries for spatial_dims={spatial_dims}, "
                f"got {tuple(value)!r}"
            )
        return tuple(value)
    raise TypeError(f"{name} must be an int or a tuple of {spatial_dims} ints, got {value!r}")


_HALF_DTYPES = HALF_DTYPES


def global_avg_pool(x: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    """Average over all spatial axes: (N, C, *spatial) -> (N, C) (or (N, C, 1, ..., 1))."""
    return stable_mean(x, spatial_axes(x.ndim), keepdim=keepdim)


def global_max_pool(x: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    """Maximum over all spatial axes via ``amax`` (deterministic, exportable)."""
    return x.amax(spatial_axes(x.ndim), keepdim=keepdim)


# --- per-axis helpers (coordinate, strip, ELA, triplet attention; gather-excite) ---------


def pool_except(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Strip pooling: average over every spatial axis except ``axis``.

    (N, C, *spatial) -> (N, C, spatial[axis]), e.g. for (N, C, T, H, W) and ``axis=3``
    the per-row means over T and W, shape (N, C, H). ``axis`` is a tensor dimension, one
    of :func:`spatial_axes`. A 1D input has no other axis and is returned as it is.
    Accumulates in float32 for fp16/bf16 (:func:`stable_mean`).
    """
    others = tuple(a for a in spatial_axes(x.ndim) if a != axis)
    if len(others) == x.ndim - 2:
        raise ValueError(f"axis must be one of {spatial_axes(x.ndim)}, got {axis!r}")
    return stable_mean(x, others) if others else x


def expand_axis(t: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """The inverse layout of :func:`pool_except`: a per-position sequence (N, C', S) as a
    tensor of rank ``ndim`` that broadcasts along every other spatial axis,
    (N, C', 1, …, S, …, 1) with S at dimension ``axis`` (a view, no copy)."""
    shape = [t.shape[0], t.shape[1]] + [1] * (ndim - 2)
    shape[axis] = t.shape[2]
    return t.reshape(shape)


def avg_pool(
    x: torch.Tensor,
    kernel_size: int,
    *,
    stride: int,
    padding: int = 0,
) -> torch.Tensor:
    """Windowed average pooling of an (N, C, *spatial) tensor of any rank: the mean of
    the in-bounds positions of every ``kernel_size^d`` window, windows every ``stride``
    positions over the input padded by ``padding`` (at most ``kernel_size // 2``) on each
    side, the padding not counted (``count_include_pad=False``).

    The in-bounds part of a box window is a box, so the mean is taken one axis at a time
    (``F.avg_pool2d`` with a (k, 1) window over a view of the tensor): unlike
    ``F.avg_pool3d`` it accepts a window larger than the input (a small late-stage map)
    and its CUDA backward is deterministic. Accumulates in float32 for fp16/bf16 input;
    the result has ``x.dtype``.
    """
    out = x.float() if x.dtype in _HALF_DTYPES else x
    for axis in spatial_axes(x.ndim):
        shape = out.shape
        rows = out.reshape(math.prod(shape[:axis]), 1, shape[axis], math.prod(shape[axis + 1:]))
        pooled = nn.functional.avg_pool2d(
            rows, (kernel_size, 1), stride=(stride, 1), padding=(padding, 0),
            count_include_pad=False,
        )
        out = pooled.reshape(*shape[:axis], pooled.shape[2], *shape[axis + 1:])
    return out.to(x.dtype)


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to accumulate sums, norms and statistics in: float32 for fp16/bf16
    (their range and precision overflow or stall over many positions), else ``dtype``."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype
