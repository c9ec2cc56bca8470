"""SE / CBAM's M_c, M_s and CBAM on the native CPU kernels: one C++ call per pass.

The equations are the fused path's (Hu et al. 2018 eq. 2-4; Woo et al. 2018 eq. 1-3) and
every block, whichever parts it has (a channel gate, a spatial gate or both), runs as

- **inference** (autograd records nothing: ``torch.inference_mode``, ``torch.no_grad``,
  or an input and weights that need no gradient): one call,
  ``native.block_forward`` — global pools, the MLP, the channel-pooled maps of
  ``x * M_c``, the 'same' convolution, both gates and the products, no ATen op between;
- **training**: ``native.block_autograd``, an autograd function written in C++ (no Python
  runs in either pass) whose forward is one call (``block_train_forward``, which also
  keeps the pooled values, the MLP's pre-activations, the gates, the maps and the argmax
  positions of the max pools) and whose backward is one call (``block_backward``: dL/dM_s
  and the dy part of dL/dM_c in one pass over dy and x, the spatial gate's and the
  convolution's gradients, the maps' share of dL/dM_c in one pass over x, the MLP's
  gradients, and dx in one pass over dy).

So the forward reads x three times and writes once (CBAM), the backward reads dy twice and
x twice and writes dx once, and a block costs two calls into C++ per training step
whatever its size. Autocast is off inside: blocks compute in x's dtype with float32
accumulation and small tensors for half inputs, as the fused path does. What the backward
needs is kept at its least size, as the fused path keeps it: the maps in x's dtype, the
channel argmax in one byte when C <= 256, the convolution's output only where an affine or
the gate's derivative needs it.
"""

from __future__ import annotations

import torch

from . import native
from .ops import ncs_is_view

__all__ = ["block_forward", "cbam", "channel_attention", "fuses_residual", "needs_grad", "spatial_attention"]


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd would record a graph for these inputs."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _flags(cpools: tuple[str, ...], spools: tuple[str, ...]) -> tuple[bool, bool, bool, bool, bool]:
    """(channel avg, channel max, avg map first, avg map, max map) for the C++ entries."""
    return "avg" in cpools, "max" in cpools, bool(spools) and spools[0] == "avg", "avg" in spools, "max" in spools


def block_forward(x, gate, *, mlp=None, conv=None, residual=None):
    """The whole block without autograd, in one C++ call (``native.block_forward``):
    ``mlp`` = (w1, b1, w2, b2, pools, act) for the channel gate, ``conv`` = (weight, scale,
    shift, pools) for the spatial gate; either may be None. The output is a fresh tensor
    laid out as ``x`` (contiguous or channels_last). With ``residual`` (a tensor for which
    :func:`fuses_residual` holds) the output is ``relu(block(x) + residual)``, the end of a
    residual block, written in the same pass."""
    w1, b1, w2, b2, cpools, act = (None, None, None, None, (), "identity") if mlp is None else mlp
    weight, scale, shift, spools = (None, None, None, ()) if conv is None else conv
    cavg, cmax, avg_first, savg, smax = _flags(cpools, spools)
    return native.load().block_forward(
        x, w1, b1, w2, b2, cavg, cmax, act, weight, scale, shift, avg_first, savg, smax, gate, residual
    )


def fuses_residual(x: torch.Tensor, residual: torch.Tensor) -> bool:
    """True when :func:`block_forward` can add ``residual`` in its last pass: the same
    shape, dtype, device and strides as ``x``, which is contiguous or channels-last."""
    return (
        residual.shape == x.shape
        and residual.dtype == x.dtype
        and residual.device == x.device
        and residual.stride() == x.stride()
        and ncs_is_view(x)
    )


def _block(x, w1, b1, w2, b2, weight, scale, shift, cpools, spools, act, gate):
    """The block with autograd: ``native.block_autograd``, a C++ autograd function whose
    forward (``block_train_forward``) and backward (``block_backward``) are one call each."""
    cavg, cmax, avg_first, savg, smax = _flags(cpools, spools)
    return native.load().block_autograd(
        x, w1, b1, w2, b2, weight, scale, shift, cavg, cmax, act, avg_first, savg, smax, gate
    )


def channel_attention(x, w1, b1, w2, b2, pools, act, gate):
    if not needs_grad(x, w1, b1, w2, b2):
        return block_forward(x, gate, mlp=(w1, b1, w2, b2, pools, act))
    return _block(x, w1, b1, w2, b2, None, None, None, pools, (), act, gate)


def spatial_attention(x, weight, scale, shift, pools, gate):
    if not needs_grad(x, weight, scale, shift):
        return block_forward(x, gate, conv=(weight, scale, shift, pools))
    return _block(x, None, None, None, None, weight, scale, shift, (), pools, "identity", gate)


def cbam(x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate):
    if not needs_grad(x, w1, b1, w2, b2, weight, scale, shift):
        return block_forward(
            x, gate, mlp=(w1, b1, w2, b2, channel_pools, act), conv=(weight, scale, shift, spatial_pools)
        )
    return _block(x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate)
