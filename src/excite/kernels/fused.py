"""Fused, memory-lean autograd functions for SE, CBAM's channel and spatial modules and CBAM.

Each function takes the input and the modules' weights and computes the whole block in
one :class:`torch.autograd.Function`, so autograd keeps only what the analytic backward
needs: the input ``x``, the small gates and pooled maps, and the argmax indices of the
max pools (instead of the full-size equality mask ``amax``'s backward builds): int64
positions for the global (spatial) max of M_c, which are (N, C) and small, and the
channel argmax of M_s's max map packed to uint8 when C <= 256 (int64 above). The
backward is written out: no ``cat``, no autograd accumulation of full-size partial
gradients, the gated tensor ``x * M_c`` of CBAM is never saved (it is recomputed inside
the backward's first pass), and the 2→1 channel spatial convolution's input gradient is
a forward convolution with the flipped kernel.

Shapes: x is (N, C, *spatial) with 1-3 spatial dims, contiguous or channels_last (any
other strides are copied once). Weights follow ``torch.nn``: ``w1`` (C/r, C), ``w2``
(C, C/r) (``nn.Linear``), the spatial kernel (1, P, *k) with odd k. ``scale`` / ``shift``
are an optional per-map affine after the spatial convolution (a frozen BatchNorm:
``gamma / sqrt(var + eps)`` and ``beta - mean * scale``; both 1-element tensors).

A max pool routes its gradient to one maximising element (the first in memory order)
where the reference ``amax`` shares it equally among ties: both are valid subgradients
and they agree wherever the maximum is unique.

The small tensors are computed in :func:`~excite.kernels.ops.compute_dtype` (float32 for
half inputs) with ``torch.autocast`` switched off inside forward and backward, so the
functions give the same result in and out of autocast. An empty batch (N = 0) gives an
empty output and empty gradients.

:func:`channel_attention`, :func:`spatial_attention` and :func:`cbam` are this path's
entries for :mod:`excite.kernels.unchecked` (arguments as there, no checks).
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from .activations import ACTIVATIONS
from .ops import (
    autocast_off,
    batched_dot_spatial,
    cast,
    channel_pools,
    compute_dtype,
    global_pools,
    mlp_backward,
    mlp_forward,
    ncs,
    spatial_gate_backward,
    spatial_gate_forward,
    unpool_channel,
    unpool_global,
)


def _pre_to_save(pre, gate):
    """The pre-gate map, or None for gates whose derivative needs only gate(pre)."""
    return None if ACTIVATIONS[gate].from_output else pre


def _pack_index(idx, size):
    """Channel argmax indices in one byte when C <= 256 (int64 again in backward)."""
    return idx.to(torch.uint8) if idx is not None and size <= 256 else idx


def _unpack_index(idx):
    return None if idx is None else idx.long()


def _maps_grad_dot(x3, dmaps3, idx, pools):
    """sum_s x[n, c, s] * (d maps / dF')[n, c, s] -> (N, C) in dmaps' dtype, without a
    full-size temporary: the mean map's part is a matrix-vector product, the max map's
    part gathers x at the argmax channel and scatter-adds it back per channel."""
    n, c = x3.shape[0], x3.shape[1]
    out = torch.zeros(n, c, dtype=dmaps3.dtype, device=x3.device)
    for i, pool in enumerate(pools):
        dm = dmaps3[:, i : i + 1]  # (N, 1, S)
        if pool == "avg":
            out += torch.bmm(x3, dm.transpose(1, 2).to(x3.dtype)).squeeze(-1).to(out.dtype) / c
        else:
            xs = x3.gather(1, idx.unsqueeze(1)).to(dm.dtype)  # x at the argmax channel
            out.scatter_add_(1, idx, (xs * dm).squeeze(1))
    return out


def save_cbam(ctx, tensors, *, cfg, params):
    """Save CBAM's forward results for its analytic backward (the native path keeps its
    own, in the same least sizes: ``native.block_autograd``, see :mod:`excite.kernels.native_functions`).

    ``tensors`` is (x, pooled, h, z, logits, g, idx_c, w1, w2, maps, conv, pre, s, idx_s,
    weight, scale) in the compute dtype; the conv output is kept only with an affine, the
    pre-gate map only for gates that need it, and the channel argmax packed to uint8.
    ``params`` are the original weights, whose dtypes the gradients are returned in.
    """
    (x, pooled, h, z, logits, g, idx_c, w1, w2, maps, conv, pre, s, idx_s, weight, scale) = tensors
    gate = cfg[3]
    ctx.save_for_backward(
        x, pooled, h, z, logits, g, idx_c, w1, w2, maps, None if scale is None else conv,
        _pre_to_save(pre, gate), s, _pack_index(idx_s, x.shape[1]), weight, scale,
    )
    ctx.cfg = cfg
    ctx.dts = tuple(None if t is None else t.dtype for t in params)


def load_cbam(ctx):
    """What :func:`save_cbam` saved, with the maps in the compute dtype, the argmax as int64
    and the dropped conv/pre-gate maps filled in (unused by the gates that drop them)."""
    (x, pooled, h, z, logits, g, idx_c, w1, w2, maps, conv, pre, s, idx_s, weight, scale) = ctx.saved_tensors
    pre = s if pre is None else pre
    conv = pre if conv is None else conv
    return x, pooled, h, z, logits, g, idx_c, w1, w2, maps.to(weight.dtype), conv, pre, s, \
        _unpack_index(idx_s), weight, scale


class ChannelGateFunction(Function):
    """y = x * gate(sum_p MLP(pool_p(x))): SE (pools=("avg",)) and CBAM's M_c."""

    @staticmethod
    @autocast_off
    def forward(ctx, x, w1, b1, w2, b2, pools, act, gate):
        x3 = ncs(x)
        cdt = compute_dtype(x)
        pooled, idx = global_pools(x3, pools, ctx.needs_input_grad[0])
        pooled = pooled.to(cdt)
        w1c, w2c = w1.to(cdt), w2.to(cdt)
        h, z, logits, g = mlp_forward(pooled, w1c, cast(b1, cdt), w2c, cast(b2, cdt), act, gate)
        # full-rank product: the output is a fresh tensor, not a view (in-place safe)
        out = x * g.to(x.dtype).view(*g.shape, *([1] * (x.ndim - 2)))
        ctx.save_for_backward(x, pooled, h, z, logits, g, idx, w1c, w2c)
        ctx.cfg = (pools, act, gate, b1 is not None, b2 is not None)
        ctx.wdt = (w1.dtype, w2.dtype)
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        x, pooled, h, z, logits, g, idx, w1, w2 = ctx.saved_tensors
        pools, act, gate, has_b1, has_b2 = ctx.cfg
        x3, dy3 = ncs(x), ncs(dout)
        t = None
        if ctx.needs_input_grad[0]:
            # dx's buffer first holds dy * x: its sum over S (a fast contiguous reduction)
            # is dL/ds, then dx = dy * s + d(pools) overwrites it in place. Measured
            # faster than the batched dot (bmm) + a fresh dx (docs/benchmarks.md).
            t = dy3 * x3
            dg = t.sum(2, dtype=g.dtype)
        else:
            dg = batched_dot_spatial(dy3, x3).to(g.dtype)
        dpooled, dw1, db1, dw2, db2 = mlp_backward(
            dg, pooled, w1, w2, h, z, logits, g, act, gate, (has_b1, has_b2)
        )
        dx3 = None
        if t is not None:
            dx3 = unpool_global(dy3, dpooled, idx, pools, g.to(x.dtype).unsqueeze(-1), out=t)
        d1, d2 = ctx.wdt
        return (
            None if dx3 is None else dx3.view(x.shape),
            dw1.to(d1), cast(db1, d1), dw2.to(d2), cast(db2, d2), None, None, None,
        )


class SpatialGateFunction(Function):
    """y = x * gate(affine(conv(pools over channels of x))): CBAM's M_s."""

    @staticmethod
    @autocast_off
    def forward(ctx, x, weight, scale, shift, pools, gate):
        x3 = ncs(x)
        cdt = compute_dtype(x)
        maps, idx = channel_pools(x, pools, ctx.needs_input_grad[0])
        wc, scale_c = weight.to(cdt), cast(scale, cdt)
        m, conv, pre, s = spatial_gate_forward(maps, wc, scale_c, cast(shift, cdt), gate)
        out = x * s.to(x.dtype)  # a fresh tensor, not a view (in-place safe)
        # the maps are kept in x's dtype (m is their upcast copy), conv only with an affine
        ctx.save_for_backward(
            x, maps, None if scale is None else conv, _pre_to_save(pre, gate), s,
            _pack_index(idx, x.shape[1]), wc, scale_c,
        )
        ctx.cfg = (pools, gate)
        ctx.dts = (weight.dtype, None if scale is None else scale.dtype, None if shift is None else shift.dtype)
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        x, maps, conv, pre, s, idx, weight, scale = ctx.saved_tensors
        pools, gate = ctx.cfg
        m, idx = maps.to(weight.dtype), _unpack_index(idx)
        pre = s if pre is None else pre  # unused by the gates that drop it
        conv = pre if conv is None else conv
        x3, dy3 = ncs(x), ncs(dout)
        n, _, size = x3.shape
        t = dy3 * x3  # the one full-size temporary; reused for dx below
        ds = t.sum(1, keepdim=True, dtype=s.dtype)
        needs = (ctx.needs_input_grad[2], ctx.needs_input_grad[3], ctx.needs_input_grad[1])
        dmaps, dweight, dscale, dshift = spatial_gate_backward(
            ds.view(s.shape), m, conv, pre, s, weight, scale, gate, needs
        )
        s3 = s.view(n, 1, size).to(x.dtype)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = unpool_channel(t, dy3, s3, dmaps.reshape(n, len(pools), size), idx, pools).view(x.shape)
        dw, dsc, dsh = ctx.dts
        return dx, cast(dweight, dw), cast(dscale, dsc), cast(dshift, dsh), None, None


class CBAMFunction(Function):
    """CBAM, channel then spatial: F' = M_c(F) ⊙ F, F'' = M_s(F') ⊙ F' (Woo et al. eq. 1)."""

    @staticmethod
    @autocast_off
    def forward(ctx, x, w1, b1, w2, b2, weight, scale, shift, channel_pools_, spatial_pools, act, gate):
        x3 = ncs(x)
        n = x3.shape[0]
        cdt = compute_dtype(x)
        pooled, idx_c = global_pools(x3, channel_pools_, ctx.needs_input_grad[0])
        pooled = pooled.to(cdt)
        w1c, w2c = w1.to(cdt), w2.to(cdt)
        h, z, logits, g = mlp_forward(pooled, w1c, cast(b1, cdt), w2c, cast(b2, cdt), act, gate)
        y = x * g.to(x.dtype).view(n, x.shape[1], *([1] * (x.ndim - 2)))  # F', a temporary: not saved
        maps, idx_s = channel_pools(y, spatial_pools, any(ctx.needs_input_grad[:5]))
        wc, scale_c = weight.to(cdt), cast(scale, cdt)
        m, conv, pre, s = spatial_gate_forward(maps, wc, scale_c, cast(shift, cdt), gate)
        out = y.mul_(s.to(x.dtype))  # F'' in F''s buffer: a fresh tensor, not a view
        save_cbam(
            ctx, (x, pooled, h, z, logits, g, idx_c, w1c, w2c, maps, conv, pre, s, idx_s, wc, scale_c),
            cfg=(channel_pools_, spatial_pools, act, gate, b1 is not None, b2 is not None),
            params=(w1, b1, w2, b2, weight, scale, shift),
        )
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        (x, pooled, h, z, logits, g, idx_c, w1, w2, m, conv, pre, s, idx_s, weight, scale) = load_cbam(ctx)
        cpools, spools, act, gate, has_b1, has_b2 = ctx.cfg
        x3, dy3 = ncs(x), ncs(dout)
        n, _, size = x3.shape
        gx = g.to(x.dtype)
        s3 = s.view(n, 1, size).to(x.dtype)
        # dM_s = sum_c dy * F' = sum_c (dy * x) * M_c  (a batched matrix-vector product)
        t = dy3 * x3
        ds = torch.bmm(gx.unsqueeze(1), t).to(s.dtype)  # (N, 1, S)
        need_mc = any(ctx.needs_input_grad[:5])
        if need_mc:
            # dM_c = sum_s dF' * x with dF' = dy * M_s + d(maps)/dF': the dy part is one more
            # matrix-vector product of the same temporary (cheaper than a pass over dF' and x)
            dg = torch.bmm(t, s3.transpose(1, 2)).squeeze(-1).to(g.dtype)  # (N, C)
        needs = (ctx.needs_input_grad[6], ctx.needs_input_grad[7], ctx.needs_input_grad[5])
        dmaps, dweight, dscale, dshift = spatial_gate_backward(
            ds.view(s.shape), m, conv, pre, s, weight, scale, gate, needs
        )
        dmaps3 = dmaps.reshape(n, len(spools), size)
        dx = dw1 = db1 = dw2 = db2 = None
        if need_mc:
            dg = dg + _maps_grad_dot(x3, dmaps3, idx_s, spools)
            dpooled, dw1, db1, dw2, db2 = mlp_backward(
                dg, pooled, w1, w2, h, z, logits, g, act, gate, (has_b1, has_b2)
            )
            if ctx.needs_input_grad[0]:
                dy1 = unpool_channel(t, dy3, s3, dmaps3, idx_s, spools)  # dF'
                dx = unpool_global(dy1, dpooled, idx_c, cpools, gx.unsqueeze(-1), out=dy1).view(x.shape)
        grads = [cast(t, dt) for t, dt in zip((dw1, db1, dw2, db2, dweight, dscale, dshift), ctx.dts)]
        return (dx, *grads, None, None, None, None)


def channel_attention(x, w1, b1, w2, b2, pools, act, gate):
    """SE / M_c through :class:`ChannelGateFunction`."""
    return ChannelGateFunction.apply(x, w1, b1, w2, b2, pools, act, gate)


def spatial_attention(x, weight, scale, shift, pools, gate):
    """M_s through :class:`SpatialGateFunction`."""
    return SpatialGateFunction.apply(x, weight, scale, shift, pools, gate)


def cbam(x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate):
    """CBAM (channel then spatial) through :class:`CBAMFunction`."""
    return CBAMFunction.apply(
        x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate
    )
