"""Reference (textbook autograd) versions of the functional API, for impl="reference".

The same equations as :mod:`excite.layers` (Hu et al. 2018 eq. 2-4; Woo et al. 2018
eq. 1-3), written with standard ops so autograd differentiates them. Means go through
:func:`~excite.kernels.ops.stable_mean`, maxima through ``amax``.

:func:`channel_attention`, :func:`spatial_attention` and :func:`cbam` are this path's
entries for :mod:`excite.kernels.unchecked`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .activations import act_forward
from .ops import stable_mean


def _pool(x: torch.Tensor, pool: str, dim: int | tuple[int, ...], keepdim: bool) -> torch.Tensor:
    if pool == "avg":
        return stable_mean(x, dim, keepdim=keepdim)
    return x.amax(dim, keepdim=keepdim)


def channel_gate(x, w1, b1, w2, b2, pools, act, gate):
    """M_c(x), shape (N, C, 1, ..., 1)."""
    axes = tuple(range(2, x.ndim))
    z = torch.stack([_pool(x, p, axes, False) for p in pools])
    logits = F.linear(act_forward(act, F.linear(z, w1, b1)), w2, b2).sum(0)
    g = act_forward(gate, logits)
    return g.reshape(*g.shape, *([1] * (x.ndim - 2)))


def spatial_gate(x, weight, scale, shift, pools, gate):
    """M_s(x), shape (N, 1, *spatial)."""
    maps = torch.cat([_pool(x, p, 1, True) for p in pools], dim=1)
    pad = [k // 2 for k in weight.shape[2:]]
    conv = (F.conv1d, F.conv2d, F.conv3d)[x.ndim - 3](maps, weight, padding=pad)
    if scale is not None:
        conv = conv * scale + shift
    return act_forward(gate, conv)


def channel_attention(x, w1, b1, w2, b2, pools, act, gate):
    return x * channel_gate(x, w1, b1, w2, b2, pools, act, gate)


def spatial_attention(x, weight, scale, shift, pools, gate):
    return x * spatial_gate(x, weight, scale, shift, pools, gate)


def cbam(x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate):
    y = channel_attention(x, w1, b1, w2, b2, channel_pools, act, gate)
    return spatial_attention(y, weight, scale, shift, spatial_pools, gate)
