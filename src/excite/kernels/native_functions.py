"""SE / CBAM's M_c, M_s and CBAM on the native CPU kernels: one C++ call per pass.

The equations are the fused path's (Hu et al. 2018 eq. 2-4; Woo et al. 2018 eq. 1-3) and
every block, whichever parts it has (a channel gate, a spatial gate or both), runs as

- **inference** (autograd records nothing: ``torch.inference_mode``, ``torch.no_grad``,
  or an input and weights that need no gradient): one call,
  ``native.block_forward`` — global pools, the MLP, the channel-pooled maps of
  ``x * M_c``, the 'same' convolution, both gates and the products, no ATen op between;
- **training**: :class:`NativeBlockFunction`, whose forward is one call
  (``native.block_train_forward``, which also keeps the pooled values, the MLP's
  pre-activations, the gates, the maps and the argmax positions of the max pools) and
  whose backward is one call (``native.block_backward``: dL/dM_s and the dy part of
  dL/dM_c in one pass over dy and x, the spatial gate's and the convolution's gradients,
  the maps' share of dL/dM_c in one pass over x, the MLP's gradients, and dx in one pass
  over dy).

So the forward reads x three times and writes once (CBAM), the backward reads dy twice and
x twice and writes dx once, and a block costs two calls into C++ per training step
whatever its size. Autocast is off inside: blocks compute in x's dtype with float32
accumulation and small tensors for half inputs, as the fused path does.
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from . import native
from .activations import ACTIVATIONS
from .ops import autocast_off, cast, compute_dtype, empty_like_ncs, ncs

__all__ = [
    "NativeBlockFunction", "block_forward", "cbam", "channel_attention", "fuses_residual", "needs_grad",
    "spatial_attention",
]


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
    args = (x, w1, b1, w2, b2, cavg, cmax, act, weight, scale, shift, avg_first, savg, smax, gate, residual)
    if torch.is_autocast_enabled("cpu"):  # the block chooses its own compute dtype
        with torch.autocast("cpu", enabled=False):
            return native.load().block_forward(*args)
    return native.load().block_forward(*args)


def fuses_residual(x: torch.Tensor, residual: torch.Tensor) -> bool:
    """True when :func:`block_forward` can add ``residual`` in its last pass: the same
    shape, dtype, device and strides as ``x``, which is contiguous or channels_last."""
    return (
        residual.shape == x.shape
        and residual.dtype == x.dtype
        and residual.device == x.device
        and residual.stride() == x.stride()
        and x.is_contiguous(memory_format=_format_of(x))
    )


def _aligned(x: torch.Tensor, dout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, S) views of x and dout in one layout (dout is copied to x's when they differ)."""
    x3, dy3 = ncs(x), ncs(dout)
    if dy3.stride() != x3.stride():
        dy3 = ncs(dout.contiguous(memory_format=_format_of(x)))
        if dy3.stride() != x3.stride():  # x was neither contiguous nor channels_last
            x3, dy3 = x3.contiguous(), dy3.contiguous()
    return x3, dy3


def _format_of(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous():
        return torch.contiguous_format
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


class NativeBlockFunction(Function):
    """y = x * M_c(x) * M_s(x * M_c(x)) with either gate optional (SE / M_c: no spatial
    part; M_s: no channel part; CBAM channel then spatial: both), one C++ call per pass."""

    @staticmethod
    @autocast_off
    def forward(ctx, x, w1, b1, w2, b2, weight, scale, shift, cpools, spools, act, gate):
        flags = _flags(cpools, spools)
        out, out3 = empty_like_ncs(x)  # a fresh tensor, not a view (in-place safe)
        x3 = ncs(x)
        _, pooled, h, logits, g, idx_c, maps, conv, s, idx_s = native.load().block_train_forward(
            x3, out3, x.shape[2:], w1, b1, w2, b2, flags[0], flags[1], act, weight, scale, shift,
            *flags[2:], gate, ctx.needs_input_grad[0] or any(ctx.needs_input_grad[1:5]),
        )
        # kept at their least size, as the fused path keeps them: the maps in x's dtype (the
        # values of x's dtype they are), the channel argmax in one byte when C <= 256, the
        # convolution's output only where an affine or the gate's derivative needs it
        if maps is not None:
            maps = maps.to(x.dtype)
        if idx_s is not None and x.shape[1] <= 256:
            idx_s = idx_s.to(torch.uint8)
        if scale is None and ACTIVATIONS[gate].from_output:
            conv = None
        ctx.save_for_backward(x, w1, w2, weight, scale, shift, pooled, h, logits, g, idx_c, maps, conv, s, idx_s)
        ctx.cfg = (flags, act, gate)
        ctx.dts = tuple(None if t is None else t.dtype for t in (w1, b1, w2, b2, weight, scale, shift))
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        x, w1, w2, weight, scale, shift, *saved = ctx.saved_tensors
        maps, idx_s = saved[5], saved[8]
        saved[5] = None if maps is None else maps.to(compute_dtype(x))
        saved[8] = None if idx_s is None else idx_s.long()
        flags, act, gate = ctx.cfg
        x3, dy3 = _aligned(x, dout)
        grads = native.load().block_backward(
            dy3, x3, x.shape[2:], w1, w2, flags[0], flags[1], act, weight, scale, shift, *flags[2:], gate,
            *saved, list(ctx.needs_input_grad[:8]),
        )
        dx = None if grads[0] is None else grads[0].view(x.shape)  # laid out as x3
        return (dx, *[cast(t, dt) for t, dt in zip(grads[1:], ctx.dts)], None, None, None, None)


def channel_attention(x, w1, b1, w2, b2, pools, act, gate):
    if not needs_grad(x, w1, b1, w2, b2):
        return block_forward(x, gate, mlp=(w1, b1, w2, b2, pools, act))
    return NativeBlockFunction.apply(x, w1, b1, w2, b2, None, None, None, pools, (), act, gate)


def spatial_attention(x, weight, scale, shift, pools, gate):
    if not needs_grad(x, weight, scale, shift):
        return block_forward(x, gate, conv=(weight, scale, shift, pools))
    return NativeBlockFunction.apply(x, None, None, None, None, weight, scale, shift, (), pools, "identity", gate)


def cbam(x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate):
    if not needs_grad(x, w1, b1, w2, b2, weight, scale, shift):
        return block_forward(
            x, gate, mlp=(w1, b1, w2, b2, channel_pools, act), conv=(weight, scale, shift, spatial_pools)
        )
    return NativeBlockFunction.apply(
        x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate
    )
