"""Autograd functions for SE / CBAM's M_c, M_s and CBAM on the native CPU kernels.

The same equations, saved tensors and analytic backward as :mod:`excite.kernels.fused`
(Hu et al. 2018 eq. 2-4; Woo et al. 2018 eq. 1-3), with every pass over the full-size
tensors done by :mod:`excite.kernels.native`'s one-pass kernels: the forward reads x once
per pooling stage and once more to write the output; the backward never builds the
``dy * x`` temporary (its two reductions come from one pass over dy and x) and writes dx
in one pass. The small parts (MLP, 2->1 convolution, gates) are the fused path's.

Autocast is off inside: the blocks compute in x's dtype with float32 accumulation for
half inputs, as the fused path does.
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from . import native
from .fused import _maps_grad_dot, _pre_to_save, load_cbam, save_cbam
from .ops import (
    autocast_off,
    cast,
    compute_dtype,
    empty_like_ncs,
    mlp_backward,
    mlp_forward,
    ncs,
    spatial_gate_backward,
    spatial_gate_forward,
)

__all__ = [
    "NativeCBAMFunction",
    "NativeChannelGateFunction",
    "NativeSpatialGateFunction",
    "cbam",
    "channel_attention",
    "spatial_attention",
]


def _split(t: torch.Tensor | None, pools: tuple[str, ...], pool: str) -> torch.Tensor | None:
    """The ``pool`` slice of a (P, ...) stack (or of dim 1 of an (N, P, S) tensor)."""
    if t is None or pool not in pools:
        return None
    return t[pools.index(pool)].contiguous()


def _global(mod, x3, pools, need_index, cdt):
    avg, mx, idx = mod.global_pools(x3, "avg" in pools, "max" in pools, need_index)
    parts = [avg.to(cdt) if p == "avg" else mx.to(cdt) for p in pools]
    return torch.stack(parts), (idx if need_index and "max" in pools else None)


def _maps(mod, x3, g, pools, need_index):
    """(N, P, S) channel-pooled maps of x3 * g in ``pools`` order, and the argmax channel."""
    maps, idx = mod.gated_channel_pools(
        x3, g, pools[0] == "avg", "avg" in pools, "max" in pools, need_index
    )
    return maps, (idx if need_index and "max" in pools else None)


class NativeChannelGateFunction(Function):
    """y = x * gate(sum_p MLP(pool_p(x))): SE (pools=("avg",)) and CBAM's M_c."""

    @staticmethod
    @autocast_off
    def forward(ctx, x, w1, b1, w2, b2, pools, act, gate):
        mod = native.load()
        x3 = ncs(x)
        cdt = compute_dtype(x)
        pooled, idx = _global(mod, x3, pools, ctx.needs_input_grad[0], cdt)
        w1c, w2c = w1.to(cdt), w2.to(cdt)
        h, z, logits, g = mlp_forward(pooled, w1c, cast(b1, cdt), w2c, cast(b2, cdt), act, gate)
        out, out3 = empty_like_ncs(x)  # a fresh tensor, not a view (in-place safe)
        mod.apply(x3, g.to(x.dtype).contiguous(), None, out3)
        ctx.save_for_backward(x, pooled, h, z, logits, g, idx, w1c, w2c)
        ctx.cfg = (pools, act, gate, b1 is not None, b2 is not None)
        ctx.wdt = (w1.dtype, w2.dtype)
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        x, pooled, h, z, logits, g, idx, w1, w2 = ctx.saved_tensors
        pools, act, gate, has_b1, has_b2 = ctx.cfg
        mod = native.load()
        x3, dy3 = _aligned(x, dout)
        dg = mod.grad_stats(dy3, x3, None, None, False, True)[1].to(g.dtype)
        dpooled, dw1, db1, dw2, db2 = mlp_backward(
            dg, pooled, w1, w2, h, z, logits, g, act, gate, (has_b1, has_b2)
        )
        dx = None
        if ctx.needs_input_grad[0]:
            dx = mod.grad_input(
                dy3, None, None, None, None, g.contiguous(),
                _split(dpooled, pools, "avg"), _split(dpooled, pools, "max"), idx,
            ).view(x.shape)
        d1, d2 = ctx.wdt
        return dx, dw1.to(d1), cast(db1, d1), dw2.to(d2), cast(db2, d2), None, None, None


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


class NativeSpatialGateFunction(Function):
    """y = x * gate(affine(conv(pools over channels of x))): CBAM's M_s."""

    @staticmethod
    @autocast_off
    def forward(ctx, x, weight, scale, shift, pools, gate):
        mod = native.load()
        x3 = ncs(x)
        n = x3.shape[0]
        cdt = compute_dtype(x)
        ones = torch.ones(n, x3.shape[1], dtype=x.dtype, device=x.device)
        maps, idx = _maps(mod, x3, ones, pools, ctx.needs_input_grad[0])
        maps = maps.view(n, len(pools), *x.shape[2:])
        wc, scale_c = weight.to(cdt), cast(scale, cdt)
        m, conv, pre, s = spatial_gate_forward(maps, wc, scale_c, cast(shift, cdt), gate)
        out, out3 = empty_like_ncs(x)
        mod.apply(x3, ones, s.reshape(n, x3.shape[2]).to(x.dtype).contiguous(), out3)
        ctx.save_for_backward(
            x, maps, None if scale is None else conv, _pre_to_save(pre, gate), s, idx, wc, scale_c,
        )
        ctx.cfg = (pools, gate)
        ctx.dts = (weight.dtype, None if scale is None else scale.dtype, None if shift is None else shift.dtype)
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        x, maps, conv, pre, s, idx, weight, scale = ctx.saved_tensors
        pools, gate = ctx.cfg
        mod = native.load()
        m = maps.to(weight.dtype)
        pre = s if pre is None else pre
        conv = pre if conv is None else conv
        x3, dy3 = _aligned(x, dout)
        n = x3.shape[0]
        ds = mod.grad_stats(dy3, x3, None, None, True, False)[0]
        needs = (ctx.needs_input_grad[2], ctx.needs_input_grad[3], ctx.needs_input_grad[1])
        dmaps, dweight, dscale, dshift = spatial_gate_backward(
            ds.view(s.shape), m, conv, pre, s, weight, scale, gate, needs
        )
        dx = None
        if ctx.needs_input_grad[0]:
            dmaps3 = dmaps.reshape(n, len(pools), x3.shape[2]).to(s.dtype)
            dx = mod.grad_input(
                dy3, s.reshape(n, x3.shape[2]).contiguous(), _split(dmaps3.transpose(0, 1), pools, "avg"),
                _split(dmaps3.transpose(0, 1), pools, "max"), idx,
            ).view(x.shape)
        dw, dsc, dsh = ctx.dts
        return dx, cast(dweight, dw), cast(dscale, dsc), cast(dshift, dsh), None, None


class NativeCBAMFunction(Function):
    """CBAM, channel then spatial: F' = M_c(F) ⊙ F, F'' = M_s(F') ⊙ F' (Woo et al. eq. 1)."""

    @staticmethod
    @autocast_off
    def forward(ctx, x, w1, b1, w2, b2, weight, scale, shift, channel_pools_, spatial_pools, act, gate):
        mod = native.load()
        x3 = ncs(x)
        n = x3.shape[0]
        cdt = compute_dtype(x)
        pooled, idx_c = _global(mod, x3, channel_pools_, ctx.needs_input_grad[0], cdt)
        w1c, w2c = w1.to(cdt), w2.to(cdt)
        h, z, logits, g = mlp_forward(pooled, w1c, cast(b1, cdt), w2c, cast(b2, cdt), act, gate)
        gx = g.to(x.dtype).contiguous()
        maps, idx_s = _maps(mod, x3, gx, spatial_pools, any(ctx.needs_input_grad[:5]))
        maps = maps.view(n, len(spatial_pools), *x.shape[2:])
        wc, scale_c = weight.to(cdt), cast(scale, cdt)
        m, conv, pre, s = spatial_gate_forward(maps, wc, scale_c, cast(shift, cdt), gate)
        out, out3 = empty_like_ncs(x)
        mod.apply(x3, gx, s.reshape(n, x3.shape[2]).to(x.dtype).contiguous(), out3)
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
        mod = native.load()
        x3, dy3 = _aligned(x, dout)
        n = x3.shape[0]
        s2 = s.reshape(n, x3.shape[2]).contiguous()
        need_mc = any(ctx.needs_input_grad[:5])
        # dM_s = sum_c dy * F' = sum_c M_c dy x and the dy part of dM_c = sum_s dy x M_s:
        # one pass over dy and x, no dy * x temporary
        ds, dg = mod.grad_stats(dy3, x3, g.contiguous(), s2, True, need_mc)
        needs = (ctx.needs_input_grad[6], ctx.needs_input_grad[7], ctx.needs_input_grad[5])
        dmaps, dweight, dscale, dshift = spatial_gate_backward(
            ds.view(s.shape), m, conv, pre, s, weight, scale, gate, needs
        )
        dmaps3 = dmaps.reshape(n, len(spools), x3.shape[2])
        dx = dw1 = db1 = dw2 = db2 = None
        if need_mc:
            dg = dg.to(g.dtype) + _maps_grad_dot(x3, dmaps3, idx_s, spools)
            dpooled, dw1, db1, dw2, db2 = mlp_backward(
                dg, pooled, w1, w2, h, z, logits, g, act, gate, (has_b1, has_b2)
            )
            if ctx.needs_input_grad[0]:
                dm = dmaps3.to(s.dtype).transpose(0, 1)  # (P, N, S)
                dx = mod.grad_input(
                    dy3, s2, _split(dm, spools, "avg"), _split(dm, spools, "max"), idx_s,
                    g.contiguous(), _split(dpooled, cpools, "avg"), _split(dpooled, cpools, "max"),
                    idx_c,
                ).view(x.shape)
        grads = [cast(t, dt) for t, dt in zip((dw1, db1, dw2, db2, dweight, dscale, dshift), ctx.dts)]
        return (dx, *grads, None, None, None, None)


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd would record a graph for these inputs."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def block_forward(x, gate, *, mlp=None, conv=None):
    """The whole block without autograd, in one C++ call (``native.block_forward``):
    ``mlp`` = (w1, b1, w2, b2, pools, act) for the channel gate, ``conv`` = (weight, scale,
    shift, pools) for the spatial gate; either may be None. Used when no gradient is
    needed (inference, ``torch.no_grad``, frozen weights and input). The output is a
    fresh tensor laid out as ``x`` (contiguous or channels_last)."""
    w1, b1, w2, b2, cpools, act = (None, None, None, None, (), "identity") if mlp is None else mlp
    weight, scale, shift, spools = (None, None, None, ()) if conv is None else conv
    args = (
        x, w1, b1, w2, b2, "avg" in cpools, "max" in cpools, act, weight, scale, shift,
        bool(spools) and spools[0] == "avg", "avg" in spools, "max" in spools, gate,
    )
    if torch.is_autocast_enabled("cpu"):  # the block chooses its own compute dtype
        with torch.autocast("cpu", enabled=False):
            return native.load().block_forward(*args)
    return native.load().block_forward(*args)


def channel_attention(x, w1, b1, w2, b2, pools, act, gate):
    if not needs_grad(x, w1, b1, w2, b2):
        return block_forward(x, gate, mlp=(w1, b1, w2, b2, pools, act))
    return NativeChannelGateFunction.apply(x, w1, b1, w2, b2, pools, act, gate)


def spatial_attention(x, weight, scale, shift, pools, gate):
    if not needs_grad(x, weight, scale, shift):
        return block_forward(x, gate, conv=(weight, scale, shift, pools))
    return NativeSpatialGateFunction.apply(x, weight, scale, shift, pools, gate)


def cbam(x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate):
    if not needs_grad(x, w1, b1, w2, b2, weight, scale, shift):
        return block_forward(
            x, gate, mlp=(w1, b1, w2, b2, channel_pools, act), conv=(weight, scale, shift, spatial_pools)
        )
    return NativeCBAMFunction.apply(
        x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, act, gate
    )
