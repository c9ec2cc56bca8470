"""Small building blocks shared by the fused autograd functions.

Everything here works on the "NCS view" of an (N, C, *spatial) tensor: a 3-dim
(N, C, S) view with S = prod(spatial). For a contiguous tensor it is ``x.view(N, C, S)``;
for a channels_last / channels_last_3d tensor it is the transpose of the contiguous
(N, S, C) view, so no copy is made for either layout. Elementwise results keep the
layout of their inputs, and a (N, C, S) result reshapes back to (N, C, *spatial) as a view.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

_HALF = (torch.float16, torch.bfloat16)

#: activations the fused MLP knows how to differentiate (names as in excite.layers)
ACTIVATIONS = ("relu", "silu", "gelu", "tanh", "sigmoid", "hard_sigmoid", "identity")


def ncs(x: torch.Tensor) -> torch.Tensor:
    """The (N, C, S) view of ``x`` without a copy when ``x`` is contiguous or channels_last."""
    n, c = x.shape[0], x.shape[1]
    if x.is_contiguous():
        return x.view(n, c, -1)
    perm = (0, *range(2, x.ndim), 1)
    xp = x.permute(perm)
    if xp.is_contiguous():
        return xp.reshape(n, -1, c).transpose(1, 2)
    return x.contiguous().view(n, c, -1)


def act_forward(name: str, h: torch.Tensor) -> torch.Tensor:
    """Apply the named activation (as ``torch.nn`` defines it)."""
    if name == "relu":
        return torch.relu(h)
    if name == "silu":
        return F.silu(h)
    if name == "gelu":
        return F.gelu(h)
    if name == "tanh":
        return torch.tanh(h)
    if name == "sigmoid":
        return torch.sigmoid(h)
    if name == "hard_sigmoid":
        return F.hardsigmoid(h)
    if name == "identity":
        return h
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def act_backward(name: str, grad: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``grad * act'(h)``, given the pre-activation ``h`` and the output ``z = act(h)``."""
    if name == "relu":
        return grad * (h > 0).to(grad.dtype)
    if name == "silu":
        sig = torch.sigmoid(h)
        return grad * (sig * (1 + h * (1 - sig)))
    if name == "gelu":  # exact (erf) GELU, nn.GELU's default
        cdf = 0.5 * (1 + torch.erf(h * (1 / math.sqrt(2))))
        pdf = torch.exp(-0.5 * h * h) * (1 / math.sqrt(2 * math.pi))
        return grad * (cdf + h * pdf)
    if name == "tanh":
        return grad * (1 - z * z)
    if name == "sigmoid":
        return grad * (z * (1 - z))
    if name == "hard_sigmoid":  # relu6(h + 3) / 6
        return grad * ((h > -3) & (h < 3)).to(grad.dtype) * (1 / 6)
    if name == "identity":
        return grad
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def plain_mode() -> bool:
    """True while a dispatch mode (FlopCounterMode, fake tensors, export) is active.

    The fused path then uses the textbook convolution call, so profilers count the
    same multiply-adds as the reference path and tracers see standard ops.
    """
    return torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None


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
    """Stride-1 convolution with odd kernel and 'same' zero padding, any rank 1-3."""
    d = x.ndim - 2
    if d == 3 and w.shape[2] > 1 and not plain_mode():
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
    if d == 3 and w.shape[2] > 1 and not plain_mode():
        return _conv3d_weight_grad_by_frames(x, grad, w)
    pad = [k // 2 for k in w.shape[2:]]
    return torch.ops.aten.convolution_backward(
        grad.contiguous(), x.contiguous(), w.contiguous(), None, [1] * d, pad, [1] * d, False, [0] * d, 1, [False, True, False]
    )[1]


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
            if x3.dtype in _HALF:
                out.append(x3.mean(2, dtype=torch.float32).to(x3.dtype))
            else:
                out.append(x3.mean(2))
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
            if y.dtype in _HALF:
                out.append(y.mean(1, keepdim=True, dtype=torch.float32).to(y.dtype))
            else:
                out.append(y.mean(1, keepdim=True))
        elif need_index:
            val, idx = y.max(1, keepdim=True)
            out.append(val)
            idx = idx.reshape(y.shape[0], -1)
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
