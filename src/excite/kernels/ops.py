"""Building blocks of the reference, fused and Triton paths (public: benchmarks and the
attention layers use them too).

The one float32-accumulating mean (:func:`stable_mean`) lives here; every mean over
spatial or channel axes in excite goes through it.

Most helpers work on the "NCS view" of an (N, C, *spatial) tensor: a 3-dim (N, C, S)
view with S = prod(spatial). For a contiguous tensor it is ``x.view(N, C, S)``; for a
channels_last / channels_last_3d tensor it is the transpose of the contiguous (N, S, C)
view, so no copy is made for either layout. Elementwise results keep the layout of their
inputs, and a (N, C, S) result reshapes back to (N, C, *spatial) as a view. Sizes are
written out (never ``-1``), so an empty batch (N = 0) reshapes too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F

from ._dispatch import execution_mode
from .activations import act_backward, act_forward

HALF_DTYPES = (torch.float16, torch.bfloat16)

_Fn = TypeVar("_Fn", bound=Callable[..., object])


def stable_mean(x: torch.Tensor, dim: int | tuple[int, ...], *, keepdim: bool = False) -> torch.Tensor:
    """Mean over ``dim`` that accumulates in float32 for float16/bfloat16 input.

    The result has ``x.dtype``. (``F.adaptive_avg_pool3d`` can overflow to inf in fp16,
    so attention modules pool with this instead.)
    """
    if x.dtype in HALF_DTYPES:
        return x.mean(dim, keepdim=keepdim, dtype=torch.float32).to(x.dtype)
    return x.mean(dim, keepdim=keepdim)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Dtype of the small tensors (pooled values, MLP, maps, conv): float32 for half inputs."""
    return torch.float32 if x.dtype in HALF_DTYPES else x.dtype


def cast(t: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    """``t.to(dtype)``, passing None (a missing bias or affine, or no dtype) through."""
    return None if t is None or dtype is None else t.to(dtype)


def autocast_off(fn: _Fn) -> _Fn:
    """Run an autograd Function's ``forward(ctx, x, ...)`` / ``backward(ctx, dout, ...)``
    with ``torch.autocast`` disabled on the first tensor's device.

    The fused paths choose their own compute dtype (:func:`compute_dtype`: float32 for
    half inputs); under autocast the matmuls and convolutions would otherwise come back
    in bfloat16/float16 next to float32 weights, and backward's explicit
    ``convolution_backward`` rejects the mix.
    """

    @functools.wraps(fn)
    def run(ctx, first, *rest):
        device = first.device.type
        if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
            return fn(ctx, first, *rest)  # nothing to switch off (and no context to enter)
        with torch.autocast(device, enabled=False):
            return fn(ctx, first, *rest)

    return run  # type: ignore[return-value]


def _numel(sizes: torch.Size) -> int:
    s = 1
    for d in sizes:
        s = s * d
    return s


def ncs_is_view(x: torch.Tensor) -> bool:
    """True when :func:`ncs` views ``x`` without a copy: ``x`` is contiguous or
    channels-last (the channels innermost, at any rank)."""
    return x.is_contiguous() or x.permute(0, *range(2, x.ndim), 1).is_contiguous()


def ncs(x: torch.Tensor) -> torch.Tensor:
    """The (N, C, S) view of ``x`` without a copy when ``x`` is contiguous or channels_last."""
    n, c, s = x.shape[0], x.shape[1], _numel(x.shape[2:])
    if x.is_contiguous():
        return x.view(n, c, s)
    perm = (0, *range(2, x.ndim), 1)
    xp = x.permute(perm)
    if xp.is_contiguous():
        return xp.reshape(n, s, c).transpose(1, 2)
    return x.contiguous().view(n, c, s)


def empty_like_ncs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An uninitialised output for ``x`` and its (N, C, S) view, laid out as ``ncs(x)``.

    The output is a fresh tensor (not a view), so a custom autograd Function may return
    it and callers may modify it in place (``out += identity`` in a residual block).
    """
    if ncs_is_view(x):  # and so is ncs(out) of the same strides
        out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
    else:  # ncs copied x: the output is contiguous like that copy
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return out, ncs(out)


def _conv3d_by_frames(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A stride-1 'same' conv3d computed as one conv2d over frames plus a shifted sum.

    out[:, o, t] = sum_j Y[:, t + j, j, o] with Y = conv2d(frames of the T-padded input,
    w[o, :, j] for every j). On CPU this is ~3x faster than conv3d for the 2→1 channel
    7x7x7 convolution of CBAM (oneDNN handles many output channels better than one).
    """
    n, cin, t, h, wd = x.shape
    cout, _, kt, kh, kw = w.shape
    pad = kt // 2
    xp = F.pad(x, (0, 0, 0, 0, pad, pad))  # (N, Cin, T + kt - 1, H, W)
    frames = xp.transpose(1, 2).reshape(n * (t + kt - 1), cin, h, wd)
    w2 = w.permute(2, 0, 1, 3, 4).reshape(kt * cout, cin, kh, kw).contiguous()
    # contiguous output (a channels_last weight would make oneDNN return channels_last)
    y = F.conv2d(frames, w2, padding=(kh // 2, kw // 2)).contiguous()  # (N*(T+kt-1), kt*Cout, H, W)
    # the shifted sum as one reduction over a strided view: element (n, t, j) -> y[n, t + j, j]
    st = kt * cout * h * wd
    diag = y.as_strided((n, t, kt, cout, h, wd), (st * (t + kt - 1), st, st + cout * h * wd, h * wd, wd, 1))
    return diag.sum(2).transpose(1, 2)  # (N, Cout, T, H, W), a view


def _conv3d_weight_grad_by_frames(x: torch.Tensor, grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weight gradient of :func:`_conv3d_by_frames` as one conv2d weight gradient whose
    input stacks the kt temporal shifts of every frame as channels."""
    n, cin, t, h, wd = x.shape
    cout, _, kt, kh, kw = w.shape
    pad = kt // 2
    xp = F.pad(x, (0, 0, 0, 0, pad, pad))
    shifts = xp.unfold(2, kt, 1)  # (N, Cin, T, H, W, kt)
    frames = shifts.permute(0, 2, 1, 5, 3, 4).reshape(n * t, cin * kt, h, wd)
    g2 = grad.transpose(1, 2).reshape(n * t, cout, h, wd)
    w2 = w.reshape(cout, cin * kt, kh, kw).contiguous()
    dw = torch.ops.aten.convolution_backward(
        g2, frames, w2, None, [1, 1], [kh // 2, kw // 2], [1, 1], False, [0, 0], 1, [False, True, False]
    )[1]
    return dw.reshape(cout, cin, kt, kh, kw)


def conv_same(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Stride-1 convolution with odd kernel and 'same' zero padding, any rank 1-3.

    Outside eager execution (:func:`~excite.kernels.execution_mode`: compile, tracing,
    profilers' dispatch modes) it is the textbook ``conv{d}d`` call, so profilers count
    the same multiply-adds as the reference path and tracers see standard ops.
    """
    d = x.ndim - 2
    if d == 3 and w.shape[2] > 1 and execution_mode(x) == "eager":
        return _conv3d_by_frames(x, w)
    pad = [k // 2 for k in w.shape[2:]]
    return (F.conv1d, F.conv2d, F.conv3d)[d - 1](x, w, padding=pad)


def conv_same_input_grad(grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """d(conv_same(x, w))/dx applied to ``grad``: a forward conv with the flipped,
    transposed kernel (about 10x faster on CPU than convolution_backward for 2→1 channels)."""
    d = grad.ndim - 2
    wt = w.flip(list(range(2, 2 + d))).transpose(0, 1).contiguous()
    return conv_same(grad, wt)


def conv_same_weight_grad(x: torch.Tensor, grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """d(conv_same(x, w))/dw applied to ``grad``."""
    d = x.ndim - 2
    if d == 3 and w.shape[2] > 1 and execution_mode(x) == "eager":
        return _conv3d_weight_grad_by_frames(x, grad, w)
    pad = [k // 2 for k in w.shape[2:]]
    return torch.ops.aten.convolution_backward(
        grad.contiguous(), x.contiguous(), w.contiguous(), None, [1] * d, pad, [1] * d, False, [0] * d, 1, [False, True, False]
    )[1]


def spatial_gate_forward(
    maps: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    gate: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """M_s from the pooled maps (N, P, *spatial): (conv input m, conv output, pre-gate,
    gate s (N, 1, *spatial)). ``weight``, ``scale``, ``shift`` are already in the compute
    dtype; ``m`` is the maps cast to it."""
    m = maps.to(weight.dtype)
    conv = conv_same(m, weight)
    pre = conv if scale is None else conv * scale + shift
    return m, conv, pre, act_forward(gate, pre)


def spatial_gate_backward(
    ds: torch.Tensor,
    m: torch.Tensor,
    conv: torch.Tensor,
    pre: torch.Tensor,
    s: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    gate: str,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Backward of :func:`spatial_gate_forward`: ds (N, 1, *spatial) -> (d maps
    (N, P, *spatial), d weight, d scale, d shift); ``needs`` = (scale, shift, weight)."""
    dpre = act_backward(gate, ds.to(s.dtype), pre, s)
    dscale = dshift = None
    if scale is not None:
        if needs[0]:
            dscale = (dpre * conv).sum().reshape(scale.shape)
        if needs[1]:
            dshift = dpre.sum().reshape(scale.shape)
        dconv = dpre * scale
    else:
        dconv = dpre
    dweight = conv_same_weight_grad(m, dconv, weight) if needs[2] else None
    dmaps = conv_same_input_grad(dconv, weight)
    return dmaps, dweight, dscale, dshift


def mlp_forward(
    pooled: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    act: str,
    gate: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shared channel MLP summed over pooled descriptors, then the gate.

    ``pooled`` is (P, N, C). Returns (h, z, logits, g): h = pooled W1^T + b1 (P, N, C/r),
    z = act(h), logits = sum_p (z_p W2^T + b2) (N, C), g = gate(logits).
    """
    h = F.linear(pooled, w1, b1)
    z = act_forward(act, h)
    logits = F.linear(z, w2, b2).sum(0)
    return h, z, logits, act_forward(gate, logits)


def mlp_backward(
    dg: torch.Tensor,
    pooled: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    h: torch.Tensor,
    z: torch.Tensor,
    logits: torch.Tensor,
    g: torch.Tensor,
    act: str,
    gate: str,
    has_bias: tuple[bool, bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Backward of :func:`mlp_forward`: (d pooled, dW1, db1, dW2, db2)."""
    p = pooled.shape[0]
    dlogits = act_backward(gate, dg, logits, g)  # (N, C)
    dw2 = dlogits.t() @ z.sum(0)  # same dlogits for every descriptor
    db2 = dlogits.sum(0) * p if has_bias[1] else None
    dz = dlogits @ w2  # (N, C/r)
    dh = act_backward(act, dz.unsqueeze(0).expand_as(h), h, z)  # (P, N, C/r)
    dw1 = dh.reshape(-1, dh.shape[-1]).t() @ pooled.reshape(-1, pooled.shape[-1])
    db1 = dh.sum((0, 1)) if has_bias[0] else None
    dpooled = dh @ w1  # (P, N, C)
    return dpooled, dw1, db1, dw2, db2


def global_pools(
    x3: torch.Tensor, pools: tuple[str, ...], need_index: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pool (N, C, S) over S: a (P, N, C) stack in ``pools`` order, and the argmax (N, C)
    (None without ``need_index``: ``amax`` is several times faster than max-with-index)."""
    out = []
    idx = None
    for pool in pools:
        if pool == "avg":
            out.append(stable_mean(x3, 2))
        elif need_index:
            val, idx = x3.max(2)
            out.append(val)
        else:
            out.append(x3.amax(2))
    return torch.stack(out), idx


def channel_pools(
    y: torch.Tensor, pools: tuple[str, ...], need_index: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pool (N, C, *spatial) over C: the (N, P, *spatial) maps in ``pools`` order, and the
    argmax flattened to (N, S). (Pooling the full-rank tensor, not its (N, C, S) view,
    keeps Inductor's dynamic-shape lowering away from splitting S back into *spatial.)"""
    out = []
    idx = None
    for pool in pools:
        if pool == "avg":
            out.append(stable_mean(y, 1, keepdim=True))
        elif need_index:
            val, idx = y.max(1, keepdim=True)
            out.append(val)
            idx = idx.reshape(y.shape[0], _numel(y.shape[2:]))
        else:
            out.append(y.amax(1, keepdim=True))
    return torch.cat(out, 1), idx


def unpool_global(
    dy3: torch.Tensor,
    dpooled: torch.Tensor,
    idx: torch.Tensor | None,
    pools: tuple[str, ...],
    gate3: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``dy3 * gate3 + d(global pools)`` in one pass (``out`` may be ``dy3`` itself);
    dpooled is (P, N, C), gate3 (N, C, 1)."""
    s = dy3.shape[2]
    base = None
    for i, pool in enumerate(pools):
        if pool == "avg":
            base = (dpooled[i] / s).to(dy3.dtype).unsqueeze(-1)
    if base is None:
        dx3 = torch.mul(dy3, gate3) if out is None else torch.mul(dy3, gate3, out=out)
    else:
        dx3 = torch.addcmul(base, dy3, gate3) if out is None else torch.addcmul(base, dy3, gate3, out=out)
    for i, pool in enumerate(pools):
        if pool == "max":
            dx3.scatter_add_(2, idx.unsqueeze(-1), dpooled[i].to(dy3.dtype).unsqueeze(-1))
    return dx3


def unpool_channel(
    out: torch.Tensor,
    dy3: torch.Tensor,
    gate3: torch.Tensor,
    dmaps: torch.Tensor,
    idx: torch.Tensor | None,
    pools: tuple[str, ...],
) -> torch.Tensor:
    """``out = dy3 * gate3 + d(channel pools)``; dmaps is (N, P, S), out may alias dy3's temp."""
    c = dy3.shape[1]
    base = None
    for i, pool in enumerate(pools):
        if pool == "avg":
            base = (dmaps[:, i : i + 1] / c).to(dy3.dtype)
    if base is None:
        torch.mul(dy3, gate3, out=out)
    else:
        torch.addcmul(base, dy3, gate3, out=out)
    for i, pool in enumerate(pools):
        if pool == "max":
            out.scatter_add_(1, idx.unsqueeze(1), dmaps[:, i : i + 1].to(dy3.dtype))
    return out


def batched_dot_spatial(a3: torch.Tensor, b3: torch.Tensor) -> torch.Tensor:
    """sum_s a[n, c, s] * b[n, c, s] -> (N, C), without an (N, C, S) temporary."""
    return torch.einsum("ncs,ncs->nc", a3, b3)
