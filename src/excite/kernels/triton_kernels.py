"""Triton kernels for SE / CBAM (optional extra ``triton``; CUDA, or the CPU interpreter
with ``TRITON_INTERPRET=1``).

Full-size passes (x is (N, C, S) through its NCS view, any strides):

forward
  1. ``_global_pool``: one read of x -> per-(n, c) mean and max with argmax (M_c's pools).
  2. ``_gated_channel_pool``: one read of x -> per-position mean/max/argmax over channels
     of x * M_c, without writing the gated tensor (M_s's maps).
  3. ``_apply``: one read + one write: y = x * M_c * M_s.
backward
  4. ``_spatial_grad``: one read of dy and x -> dM_s = sum_c dy * x * M_c.
  5. ``_channel_grad``: one read of dy and x -> dM_c = sum_s dF' * x, where dF' (the
     gradient w.r.t. x * M_c) is rebuilt on the fly from dy, M_s and the map gradients.
  6. ``_input_grad``: one read of dy and x, one write of dx.

The small parts (the channel MLP, the k^d convolution, the gates and their gradients)
run as ordinary PyTorch ops on (N, C) and (N, 1, *spatial) tensors in float32, with
``torch.autocast`` switched off inside forward and backward (as in :mod:`.fused`).

:func:`channel_attention`, :func:`spatial_attention` and :func:`cbam` are this path's
entries for :mod:`excite.kernels.unchecked`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd import Function

from .ops import (
    autocast_off,
    cast,
    empty_like_ncs,
    mlp_backward,
    mlp_forward,
    ncs,
    spatial_gate_backward,
    spatial_gate_forward,
)

_BLOCK = 128


@triton.jit
def _global_pool(x_ptr, avg_ptr, max_ptr, idx_ptr, C, S, sxn, sxc, sxs, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // C
    c = pid % C
    base = x_ptr + n * sxn + c * sxc
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    best = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
    where = tl.zeros((BLOCK,), dtype=tl.int64)
    for start in range(0, S, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < S
        v = tl.load(base + offs * sxs, mask=mask, other=0.0).to(tl.float32)
        acc += v
        v = tl.where(mask, v, float("-inf"))
        up = v > best
        best = tl.where(up, v, best)
        where = tl.where(up, offs.to(tl.int64), where)
    m = tl.max(best, axis=0)
    # first position holding the maximum
    cand = tl.where(best == m, where, S)
    tl.store(avg_ptr + pid, tl.sum(acc, axis=0) / S)
    tl.store(max_ptr + pid, m)
    tl.store(idx_ptr + pid, tl.min(cand, axis=0))


@triton.jit
def _gated_channel_pool(
    x_ptr, g_ptr, mean_ptr, max_ptr, idx_ptr, C, S, sxn, sxc, sxs,
    HAS_G: tl.constexpr, BLOCK: tl.constexpr,
):
    n = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < S
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    best = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
    where = tl.zeros((BLOCK,), dtype=tl.int64)
    for c in range(0, C):
        v = tl.load(x_ptr + n * sxn + c * sxc + offs * sxs, mask=mask, other=0.0).to(tl.float32)
        if HAS_G:
            v = v * tl.load(g_ptr + n * C + c)
        acc += v
        up = v > best
        best = tl.where(up, v, best)
        where = tl.where(up, c, where)
    tl.store(mean_ptr + n * S + offs, acc / C, mask=mask)
    tl.store(max_ptr + n * S + offs, best, mask=mask)
    tl.store(idx_ptr + n * S + offs, where, mask=mask)


@triton.jit
def _apply(
    x_ptr, g_ptr, s_ptr, out_ptr, C, S, sxn, sxc, sxs, son, soc, sos,
    HAS_G: tl.constexpr, HAS_S: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // C
    c = pid % C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < S
    v = tl.load(x_ptr + n * sxn + c * sxc + offs * sxs, mask=mask, other=0.0).to(tl.float32)
    if HAS_G:
        v = v * tl.load(g_ptr + pid)
    if HAS_S:
        v = v * tl.load(s_ptr + n * S + offs, mask=mask, other=0.0)
    tl.store(out_ptr + n * son + c * soc + offs * sos, v.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _spatial_grad(
    dy_ptr, x_ptr, g_ptr, ds_ptr, C, S, sxn, sxc, sxs, sdn, sdc, sds,
    HAS_G: tl.constexpr, BLOCK: tl.constexpr,
):
    n = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < S
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for c in range(0, C):
        v = tl.load(x_ptr + n * sxn + c * sxc + offs * sxs, mask=mask, other=0.0).to(tl.float32)
        d = tl.load(dy_ptr + n * sdn + c * sdc + offs * sds, mask=mask, other=0.0).to(tl.float32)
        t = v * d
        if HAS_G:
            t = t * tl.load(g_ptr + n * C + c)
        acc += t
    tl.store(ds_ptr + n * S + offs, acc, mask=mask)


@triton.jit
def _dgated(d, n, c, offs, mask, s_ptr, dmean_ptr, dmax_ptr, idxs_ptr, C, S,
            HAS_S: tl.constexpr, S_AVG: tl.constexpr, S_MAX: tl.constexpr):
    """d(loss)/d(x * M_c) at (n, c, offs) from dy (``d``) and the spatial module."""
    if HAS_S:
        d = d * tl.load(s_ptr + n * S + offs, mask=mask, other=0.0)
        if S_AVG:
            d += tl.load(dmean_ptr + n * S + offs, mask=mask, other=0.0) / C
        if S_MAX:
            hit = tl.load(idxs_ptr + n * S + offs, mask=mask, other=-1) == c
            d += tl.where(hit, tl.load(dmax_ptr + n * S + offs, mask=mask, other=0.0), 0.0)
    return d


@triton.jit
def _channel_grad(
    dy_ptr, x_ptr, s_ptr, dmean_ptr, dmax_ptr, idxs_ptr, dg_ptr, C, S,
    sxn, sxc, sxs, sdn, sdc, sds,
    HAS_S: tl.constexpr, S_AVG: tl.constexpr, S_MAX: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // C
    c = pid % C
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, S, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < S
        v = tl.load(x_ptr + n * sxn + c * sxc + offs * sxs, mask=mask, other=0.0).to(tl.float32)
        d = tl.load(dy_ptr + n * sdn + c * sdc + offs * sds, mask=mask, other=0.0).to(tl.float32)
        d = _dgated(d, n, c, offs, mask, s_ptr, dmean_ptr, dmax_ptr, idxs_ptr, C, S, HAS_S, S_AVG, S_MAX)
        acc += d * v
    tl.store(dg_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _input_grad(
    dy_ptr, g_ptr, s_ptr, dmean_ptr, dmax_ptr, idxs_ptr, davg_ptr, dmaxc_ptr, idxc_ptr, dx_ptr,
    C, S, sdn, sdc, sds, son, soc, sos,
    HAS_G: tl.constexpr, C_AVG: tl.constexpr, C_MAX: tl.constexpr,
    HAS_S: tl.constexpr, S_AVG: tl.constexpr, S_MAX: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // C
    c = pid % C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < S
    d = tl.load(dy_ptr + n * sdn + c * sdc + offs * sds, mask=mask, other=0.0).to(tl.float32)
    d = _dgated(d, n, c, offs, mask, s_ptr, dmean_ptr, dmax_ptr, idxs_ptr, C, S, HAS_S, S_AVG, S_MAX)
    if HAS_G:
        d = d * tl.load(g_ptr + pid)
        if C_AVG:
            d += tl.load(davg_ptr + pid) / S
        if C_MAX:
            d += tl.where(offs == tl.load(idxc_ptr + pid), tl.load(dmaxc_ptr + pid), 0.0)
    tl.store(dx_ptr + n * son + c * soc + offs * sos, d.to(dx_ptr.dtype.element_ty), mask=mask)


def _grid_cs(n, c, s):
    return (n * c, triton.cdiv(s, _BLOCK))


class TritonAttentionFunction(Function):
    """SE / M_c (spatial_pools None), M_s (channel_pools None) or CBAM channel→spatial."""

    @staticmethod
    @autocast_off
    def forward(ctx, x, w1, b1, w2, b2, weight, scale, shift, cpools, spools, act, gate):
        x3 = ncs(x)
        n, c, s = x3.shape
        f32 = torch.float32
        dev = x.device
        g = pooled = h = z = logits = idx_c = None
        if cpools:
            avg = torch.empty(n, c, device=dev, dtype=f32)
            mx = torch.empty(n, c, device=dev, dtype=f32)
            idx_c = torch.empty(n, c, device=dev, dtype=torch.int64)
            _global_pool[(n * c,)](x3, avg, mx, idx_c, c, s, *x3.stride(), BLOCK=_BLOCK)
            pooled = torch.stack([avg if p == "avg" else mx for p in cpools])
            h, z, logits, g = mlp_forward(
                pooled, w1.to(f32), cast(b1, f32), w2.to(f32), cast(b2, f32), act, gate
            )
        m = conv = pre = sg = idx_s = None
        if spools:
            mean = torch.empty(n, s, device=dev, dtype=f32)
            mxs = torch.empty(n, s, device=dev, dtype=f32)
            idx_s = torch.empty(n, s, device=dev, dtype=torch.int64)
            _gated_channel_pool[(n, triton.cdiv(s, _BLOCK))](
                x3, g if g is not None else x3, mean, mxs, idx_s, c, s, *x3.stride(),
                HAS_G=g is not None, BLOCK=_BLOCK,
            )
            maps = torch.stack([mean if p == "avg" else mxs for p in spools], 1).view(n, len(spools), *x.shape[2:])
            m, conv, pre, sg = spatial_gate_forward(maps, weight.to(f32), cast(scale, f32), cast(shift, f32), gate)
        out, out3 = empty_like_ncs(x)  # a fresh tensor, not a view (in-place safe)
        _apply[_grid_cs(n, c, s)](
            x3, g if g is not None else x3, sg if sg is not None else x3, out3, c, s,
            *x3.stride(), *out3.stride(), HAS_G=g is not None, HAS_S=sg is not None, BLOCK=_BLOCK,
        )
        ctx.save_for_backward(x, pooled, h, z, logits, g, idx_c, w1, w2, m, conv, pre, sg, idx_s, weight, scale)
        ctx.cfg = (cpools, spools, act, gate, b1 is not None, b2 is not None)
        ctx.dts = tuple(None if t is None else t.dtype for t in (w1, b1, w2, b2, weight, scale, shift))
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        (x, pooled, h, z, logits, g, idx_c, w1, w2, m, conv, pre, sg, idx_s, weight, scale) = ctx.saved_tensors
        cpools, spools, act, gate, has_b1, has_b2 = ctx.cfg
        x3, dy3 = ncs(x), ncs(dout)
        n, c, s = x3.shape
        f32 = torch.float32
        dev = x.device
        zeros = torch.zeros(1, device=dev, dtype=f32)
        dweight = dscale = dshift = None
        dmean = dmaxs = zeros
        if spools:
            ds = torch.empty(n, s, device=dev, dtype=f32)
            _spatial_grad[(n, triton.cdiv(s, _BLOCK))](
                dy3, x3, g if g is not None else x3, ds, c, s, *x3.stride(), *dy3.stride(),
                HAS_G=g is not None, BLOCK=_BLOCK,
            )
            needs = (ctx.needs_input_grad[6], ctx.needs_input_grad[7], ctx.needs_input_grad[5])
            dmaps, dweight, dscale, dshift = spatial_gate_backward(
                ds.view(sg.shape), m, conv, pre, sg, weight.to(f32), cast(scale, f32), gate, needs
            )
            dmaps = dmaps.reshape(n, len(spools), s)
            for i, p in enumerate(spools):
                if p == "avg":
                    dmean = dmaps[:, i].contiguous()
                else:
                    dmaxs = dmaps[:, i].contiguous()
        sflags = dict(HAS_S=sg is not None, S_AVG="avg" in (spools or ()), S_MAX="max" in (spools or ()))
        sarg = sg if sg is not None else zeros
        iarg = idx_s if idx_s is not None else zeros
        dw1 = db1 = dw2 = db2 = None
        davg = dmaxc = zeros
        if cpools:
            dg = torch.empty(n, c, device=dev, dtype=f32)
            _channel_grad[(n * c,)](
                dy3, x3, sarg, dmean, dmaxs, iarg, dg, c, s, *x3.stride(), *dy3.stride(),
                **sflags, BLOCK=_BLOCK,
            )
            dpooled, dw1, db1, dw2, db2 = mlp_backward(
                dg, pooled, w1.to(f32), w2.to(f32), h, z, logits, g, act, gate, (has_b1, has_b2)
            )
            for i, p in enumerate(cpools):
                if p == "avg":
                    davg = dpooled[i].contiguous()
                else:
                    dmaxc = dpooled[i].contiguous()
        dx3 = torch.empty_like(x3)
        _input_grad[_grid_cs(n, c, s)](
            dy3, g if g is not None else zeros, sarg, dmean, dmaxs, iarg, davg, dmaxc,
            idx_c if idx_c is not None else zeros, dx3, c, s, *dy3.stride(), *dx3.stride(),
            HAS_G=g is not None, C_AVG="avg" in (cpools or ()), C_MAX="max" in (cpools or ()),
            **sflags, BLOCK=_BLOCK,
        )
        grads = [cast(t, dt) for t, dt in zip((dw1, db1, dw2, db2, dweight, dscale, dshift), ctx.dts)]
        return (dx3.view(x.shape), *grads, None, None, None, None)


def channel_attention(x, w1, b1, w2, b2, pools, act, gate):
    return TritonAttentionFunction.apply(x, w1, b1, w2, b2, None, None, None, pools, None, act, gate)


def spatial_attention(x, weight, scale, shift, pools, gate):
    return TritonAttentionFunction.apply(x, None, None, None, None, weight, scale, shift, None, pools, "identity", gate)


def cbam(x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate):
    return TritonAttentionFunction.apply(
        x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate
    )
