"""The zoo's part A (ese, ge, gc, coord, simam, triplet, strip, ela) against the papers'
equations, written out here independently.

The references use only elementwise ops, sums, einsum and explicit windows / kernel
offsets (no nn layers, no F.conv / F.interpolate / norms), in float64, with fixed
weights and BatchNorm statistics, at 1D, 2D and 3D.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from excite.layers import (
    CoordinateAttention,
    EffectiveSqueezeExcite,
    EfficientLocalAttention,
    GatherExcite,
    GlobalContext,
    SimAM,
    StripPooling,
    TripletAttention,
)

RANKS = (1, 2, 3)
SPATIAL = {1: (11,), 2: (7, 6), 3: (4, 5, 6)}
C = 8
EPS = 1e-5
TOL = dict(atol=1e-12, rtol=1e-12)


def fix_weights(module: torch.nn.Module) -> torch.nn.Module:
    """Deterministic, non-symmetric weights; BatchNorm statistics set; eval mode."""
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(module.named_parameters())):
            values = torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 0.7 + i) * 0.6
            p.copy_(values.reshape(p.shape))
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.fill_(0.2)
            elif name.endswith("running_var"):
                buf.fill_(1.7)
    return module.double().eval()


def make_x(rank: int, channels: int = C, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(4321 + 10 * rank + seed)
    return torch.randn(2, channels, *SPATIAL[rank], generator=g, dtype=torch.float64)


def params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in m.state_dict().items()}


# --- elementary functions ------------------------------------------------------------


def sigmoid(t):
    return 1.0 / (1.0 + torch.exp(-t))


def relu(t):
    return torch.where(t > 0, t, torch.zeros_like(t))


def hard_sigmoid(t):  # relu6(t + 3) / 6
    return torch.clamp(t + 3.0, 0.0, 6.0) / 6.0


def hard_swish(t):
    return t * hard_sigmoid(t)


def silu(t):
    return t * sigmoid(t)


def mean_over(x, dims):
    """Plain sum / count over ``dims`` (kept as size-1 axes)."""
    count = math.prod(x.shape[d] for d in dims)
    return x.sum(dim=dims, keepdim=True) / count if dims else x


def strip(x, axis):
    """Mean over every spatial axis but ``axis``, kept broadcastable: (N, C, .., S_a, ..)."""
    return mean_over(x, tuple(d for d in range(2, x.ndim) if d != axis))


def batch_norm_eval(t, p, prefix, channel_dim=1):
    shape = [1] * t.ndim
    shape[channel_dim] = -1

    def r(v):
        return v.reshape(shape)

    return (t - r(p[prefix + "running_mean"])) / torch.sqrt(r(p[prefix + "running_var"]) + EPS) * r(
        p[prefix + "weight"]
    ) + r(p[prefix + "bias"])


def group_norm(t, groups, gamma, beta, eps=EPS):
    """GroupNorm of (N, C, L): each group's C/G x L values to zero mean, unit (biased)
    variance, then the per-channel affine."""
    n, c, length = t.shape
    g = t.reshape(n, groups, (c // groups) * length)
    mu = g.sum(-1, keepdim=True) / g.shape[-1]
    var = ((g - mu) ** 2).sum(-1, keepdim=True) / g.shape[-1]
    out = ((g - mu) / torch.sqrt(var + eps)).reshape(n, c, length)
    return out * gamma.reshape(1, -1, 1) + beta.reshape(1, -1, 1)


def conv1d(t, w, bias=None, groups=1):
    """Cross-correlation of (N, Cin, L) with w (Cout, Cin/groups, k), zero 'same' padding,
    as a sum over kernel offsets: out[n, o, i] = sum_{c in group(o), j} w[o, c, j] t[n, c, i + j - k//2]."""
    n, cin, length = t.shape
    cout, cg, k = w.shape
    padded = torch.zeros(n, cin, length + k - 1, dtype=t.dtype)
    padded[:, :, k // 2 : k // 2 + length] = t
    out = torch.zeros(n, cout, length, dtype=t.dtype)
    og = cout // groups
    for j in range(k):
        window = padded[:, :, j : j + length]
        for gi in range(groups):
            out[:, gi * og : (gi + 1) * og] += torch.einsum(
                "oc,ncl->nol", w[gi * og : (gi + 1) * og, :, j], window[:, gi * cg : (gi + 1) * cg]
            )
    if bias is not None:
        out = out + bias.reshape(1, -1, 1)
    return out


def conv_same(maps, weight):
    """k^d cross-correlation 2->1 with zero 'same' padding over the trailing axes."""
    n, cin, *size = maps.shape
    kernel = weight.shape[2:]
    padded = torch.zeros(n, cin, *(s + k - 1 for s, k in zip(size, kernel)), dtype=maps.dtype)
    padded[(slice(None), slice(None), *(slice(k // 2, k // 2 + s) for s, k in zip(size, kernel)))] = maps
    out = torch.zeros(n, *size, dtype=maps.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = padded[(slice(None), slice(None), *(slice(o, o + s) for o, s in zip(offset, size)))]
        w = weight[(0, slice(None), *offset)].reshape(1, cin, *([1] * len(size)))
        out = out + (window * w).sum(1)
    return out.unsqueeze(1)


def depthwise_conv(t, w, stride, padding):
    """Depth-wise cross-correlation: out[n, c, p] = sum_o w[c, 0, o] t_pad[n, c, stride*p + o]."""
    n, c, *size = t.shape
    kernel = w.shape[2:]
    padded = torch.zeros(n, c, *(s + 2 * padding for s in size), dtype=t.dtype)
    padded[(slice(None), slice(None), *(slice(padding, padding + s) for s in size))] = t
    out_size = [(s + 2 * padding - k) // stride + 1 for s, k in zip(size, kernel)]
    out = torch.zeros(n, c, *out_size, dtype=t.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(o, o + stride * (m - 1) + 1, stride) for o, m in zip(offset, out_size))
        out = out + padded[(slice(None), slice(None), *index)] * w[(slice(None), 0, *offset)].reshape(
            1, c, *([1] * len(size))
        )
    return out


def nearest(t, size):
    """Nearest-neighbour resize: out[..., i] = t[..., floor(i * in / out)] per axis."""
    for axis, out_len in enumerate(size, start=2):
        src = [(i * t.shape[axis]) // out_len for i in range(out_len)]
        t = t.index_select(axis, torch.tensor(src))
    return t


# --- eSE ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("bias", [True, False])
def test_effective_se(rank: int, bias: bool) -> None:
    """A_eSE = hsigmoid(W_C mean(x) + b), one C x C matrix."""
    m = fix_weights(EffectiveSqueezeExcite(C, bias=bias))
    x, p = make_x(rank), params(m)
    z = mean_over(x, tuple(range(2, x.ndim))).flatten(1)
    logits = z @ p["fc.weight"].T + (p["fc.bias"] if bias else 0.0)
    s = hard_sigmoid(logits).reshape(2, C, *[1] * rank)
    torch.testing.assert_close(m.gate(x), s, **TOL)
    torch.testing.assert_close(m(x), x * s, **TOL)


# --- Gather-Excite ---------------------------------------------------------------------


def ge_pool_gather(x, e):
    """theta-minus with extent e: mean over the in-bounds positions q of each (2e-1)^d
    window centred at e*p, for p on the ceil(S / e) grid."""
    size = x.shape[2:]
    grid = [math.ceil(s / e) for s in size]
    out = torch.zeros(*x.shape[:2], *grid, dtype=x.dtype)
    for p in itertools.product(*(range(g) for g in grid)):
        window = tuple(slice(max(0, e * pi - (e - 1)), min(s, e * pi + e)) for pi, s in zip(p, size))
        block = x[(slice(None), slice(None), *window)]
        out[(slice(None), slice(None), *p)] = block.reshape(*x.shape[:2], -1).sum(-1) / block[0, 0].numel()
    return out


def channel_mlp(g, p, prefix):
    """1x..x1 bottleneck on a (N, C, *grid) map: W2 relu(W1 g + b1) + b2 per position."""
    w1, w2 = p[prefix + "fc1.weight"].flatten(1), p[prefix + "fc2.weight"].flatten(1)
    h = relu(torch.einsum("hc,nc...->nh...", w1, g) + p[prefix + "fc1.bias"].reshape(1, -1, *[1] * (g.ndim - 2)))
    return torch.einsum("ch,nh...->nc...", w2, h) + p[prefix + "fc2.bias"].reshape(1, -1, *[1] * (g.ndim - 2))


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("extent, mlp", [(None, False), (None, True), (2, False), (3, True), (4, False)])
def test_gather_excite_parameter_free(rank: int, extent, mlp: bool) -> None:
    """GE-theta-minus (and with the theta-plus bottleneck): y = x * sigmoid(nearest(gather(x)))."""
    m = fix_weights(GatherExcite(C, spatial_dims=rank, extent=extent, mlp=mlp, reduction=2))
    x, p = make_x(rank), params(m)
    g = mean_over(x, tuple(range(2, x.ndim))) if extent is None else ge_pool_gather(x, extent)
    if mlp:
        g = channel_mlp(g, p, "mlp.")
    s = nearest(sigmoid(g), x.shape[2:]) if extent is not None else sigmoid(g)
    torch.testing.assert_close(m.gate(x), s, **TOL)
    torch.testing.assert_close(m(x), x * s, **TOL)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("mlp", [False, True])
def test_gather_excite_learned_extent(rank: int, mlp: bool) -> None:
    """GE-theta with e = 4: two depth-wise 3^d stride-2 convolutions, BN after each,
    ReLU between; GE-theta-plus adds the bottleneck."""
    m = fix_weights(GatherExcite(C, spatial_dims=rank, extent=4, learned_gather=True, mlp=mlp,
                                 reduction=4))
    x, p = make_x(rank), params(m)
    g = batch_norm_eval(depthwise_conv(x, p["gather.conv1.weight"], 2, 1), p, "gather.norm1.")
    g = batch_norm_eval(depthwise_conv(relu(g), p["gather.conv2.weight"], 2, 1), p, "gather.norm2.")
    assert g.shape[2:] == tuple(math.ceil(s / 4) for s in x.shape[2:])
    if mlp:
        g = channel_mlp(g, p, "mlp.")
    s = nearest(sigmoid(g), x.shape[2:])
    torch.testing.assert_close(m.gate(x), s, **TOL)
    torch.testing.assert_close(m(x), x * s, **TOL)


@pytest.mark.parametrize("rank", RANKS)
def test_gather_excite_learned_global(rank: int) -> None:
    """GE-theta, global extent: one depth-wise kernel over the whole map, g_c = sum_p w_cp x_cp."""
    size = SPATIAL[rank]
    m = fix_weights(GatherExcite(C, spatial_dims=rank, learned_gather=True, feature_size=size))
    x, p = make_x(rank), params(m)
    w = p["gather.conv1.weight"][:, 0]  # (C, *size)
    g = (x * w.unsqueeze(0)).reshape(2, C, -1).sum(-1).reshape(2, C, *[1] * rank)
    s = sigmoid(batch_norm_eval(g, p, "gather.norm1."))
    torch.testing.assert_close(m.gate(x), s, **TOL)
    torch.testing.assert_close(m(x), x * s, **TOL)


# --- global context ----------------------------------------------------------------------


def layer_norm(t, gamma, beta, eps=EPS):
    mu = t.sum(-1, keepdim=True) / t.shape[-1]
    var = ((t - mu) ** 2).sum(-1, keepdim=True) / t.shape[-1]
    return (t - mu) / torch.sqrt(var + eps) * gamma + beta


def gc_transform(z, p, prefix):
    """W_v2 ReLU(LN(W_v1 z + b1)) + b2 on (N, C)."""
    h = z @ p[prefix + "fc1.weight"].T + p[prefix + "fc1.bias"]
    h = relu(layer_norm(h, p[prefix + "norm.weight"], p[prefix + "norm.bias"]))
    return h @ p[prefix + "fc2.weight"].T + p[prefix + "fc2.bias"]


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("fusion", ["add", "scale", "scale+add"])
@pytest.mark.parametrize("pooling", ["attention", "avg"])
def test_global_context(rank: int, fusion: str, pooling: str) -> None:
    """z_i = x_i + W_v2 ReLU(LN(W_v1 sum_j alpha_j x_j)), alpha = softmax_j(W_k x_j);
    "scale" multiplies by sigmoid(transform) instead, "scale+add" does both."""
    m = fix_weights(GlobalContext(C, reduction=2, fusion=fusion, pooling=pooling))
    x, p = make_x(rank), params(m)
    flat = x.reshape(2, C, -1)
    if pooling == "attention":
        logits = torch.einsum("c,ncm->nm", p["attn.weight"][0], flat) + p["attn.bias"]
        alpha = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    else:
        alpha = torch.full((2, flat.shape[2]), 1.0 / flat.shape[2], dtype=x.dtype)
    context = torch.einsum("ncm,nm->nc", flat, alpha)
    expected = x
    expand = (2, C, *[1] * rank)
    if "scale" in fusion:
        expected = expected * sigmoid(gc_transform(context, p, "scale_transform.")).reshape(expand)
    if "add" in fusion:
        expected = expected + gc_transform(context, p, "add_transform.").reshape(expand)
    torch.testing.assert_close(m(x), expected, **TOL)
    torch.testing.assert_close(m.gate(x), alpha.reshape(2, 1, *x.shape[2:]), **TOL)
    torch.testing.assert_close(m.context(x), context, **TOL)


# --- coordinate attention ----------------------------------------------------------------


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("bias, norm", [(True, True), (False, True), (True, False)])
def test_coordinate_attention(rank: int, bias: bool, norm: bool) -> None:
    """z^a = strip means; f = hswish(BN(F_1 [z^1, ..., z^d])); g^a = sigmoid(F_a f^a);
    y = x * prod_a g^a."""
    m = fix_weights(CoordinateAttention(C, spatial_dims=rank, reduction=2, min_hidden=3, bias=bias,
                                        norm=norm))
    x, p = make_x(rank), params(m)
    hidden = max(3, C // 2)
    axes = range(2, x.ndim)
    strips = [strip(x, a).reshape(2, C, -1) for a in axes]  # (N, C, S_a)
    cat = torch.cat(strips, dim=2)
    f = torch.einsum("hc,ncl->nhl", p["conv1.weight"][:, :, 0], cat)
    if bias:
        f = f + p["conv1.bias"].reshape(1, -1, 1)
    if norm:
        f = batch_norm_eval(f, p, "norm.")
    f = hard_swish(f)
    assert f.shape[1] == hidden
    expected, offset, gates = x, 0, []
    for i, a in enumerate(axes):
        length = x.shape[a]
        fa = f[:, :, offset : offset + length]
        offset += length
        logits = torch.einsum("ch,nhl->ncl", p[f"convs.{i}.weight"][:, :, 0], fa)
        if bias:
            logits = logits + p[f"convs.{i}.bias"].reshape(1, -1, 1)
        shape = [2, C] + [1] * rank
        shape[a] = length
        g = sigmoid(logits).reshape(shape)
        gates.append(g)
        expected = expected * g
    got = m.gate(x)
    assert len(got) == rank
    for ours, ref in zip(got, gates):
        torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(m(x), expected, **TOL)


# --- SimAM -------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("e_lambda", [1e-4, 0.5])
def test_simam_energy(rank: int, e_lambda: float) -> None:
    """e_t* = 4(sigma^2 + lambda) / ((t - mu)^2 + 2 sigma^2 + 2 lambda) per channel over all
    positions (sigma^2 over M - 1, the authors' code); y = x * sigmoid(1 / e*)."""
    m = SimAM(e_lambda=e_lambda)
    x = make_x(rank)
    flat = x.reshape(2, C, -1)
    count = flat.shape[2]
    mu = flat.sum(-1, keepdim=True) / count
    var = ((flat - mu) ** 2).sum(-1, keepdim=True) / (count - 1)
    energy = 4 * (var + e_lambda) / ((flat - mu) ** 2 + 2 * var + 2 * e_lambda)
    w = sigmoid(1.0 / energy).reshape(x.shape)
    torch.testing.assert_close(m.gate(x), w, **TOL)
    torch.testing.assert_close(m(x), x * w, **TOL)


def test_simam_single_position() -> None:
    """M = 1: t = mu, so 1 / e* = 1/2 and the weight is sigmoid(1/2) (no 0/0)."""
    x = torch.randn(2, 3, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(SimAM()(x), x * sigmoid(torch.tensor(0.5, dtype=torch.float64)), **TOL)


# --- triplet attention ---------------------------------------------------------------------


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("spatial, norm", [(True, True), (False, True), (True, False)])
def test_triplet_attention(rank: int, spatial: bool, norm: bool) -> None:
    """Each branch rotates C into axis a's place, Z-pools a ([max; mean]), k^d conv, BN,
    sigmoid, multiplies the rotated tensor and rotates back; the output averages the
    branches (in 2D: permute(0, 2, 1, 3) for the (C, W) branch, permute(0, 3, 2, 1) for
    (H, C), the (H, W) branch on x)."""
    k = 3
    m = fix_weights(TripletAttention(C, spatial_dims=rank, kernel_size=k, spatial=spatial, norm=norm))
    x, p = make_x(rank), params(m)

    def branch(t, prefix):
        zp = torch.cat([t.max(1, keepdim=True).values, t.sum(1, keepdim=True) / t.shape[1]], 1)
        y = conv_same(zp, p[prefix + "conv.weight"])
        if norm:
            y = batch_norm_eval(y, p, prefix + "norm.")
        return t * sigmoid(y)

    outs = []
    for i, a in enumerate(range(2, x.ndim)):
        perm = list(range(x.ndim))
        perm[1], perm[a] = perm[a], perm[1]
        outs.append(branch(x.permute(perm), f"axis_gates.{i}.").permute(perm))
    if spatial:
        outs.append(branch(x, "spatial_gate."))
    expected = sum(outs) / len(outs)
    assert len(m.gate(x)) == rank + int(spatial)
    torch.testing.assert_close(m(x), expected, **TOL)


# --- strip pooling ----------------------------------------------------------------------


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("depthwise, norm, fusion", [
    (False, True, "conv"), (True, False, "sum"), (True, True, "conv"), (False, False, "sum"),
])
def test_strip_pooling(rank: int, depthwise: bool, norm: bool, fusion: str) -> None:
    """y = sum_a expand(BN(conv1d_a(strip_a))); z = x * sigmoid(f(ReLU(y))) with f a 1x1
    convolution ("conv"), or x * sigmoid(y) ("sum")."""
    m = fix_weights(StripPooling(C, spatial_dims=rank, kernel_size=3, depthwise=depthwise,
                                 norm=norm, fusion=fusion))
    x, p = make_x(rank), params(m)
    y = 0
    for i, a in enumerate(range(2, x.ndim)):
        s = strip(x, a)
        t = conv1d(s.reshape(2, C, -1), p[f"convs.{i}.weight"], groups=C if depthwise else 1)
        if norm:
            t = batch_norm_eval(t, p, f"norms.{i}.")
        y = y + t.reshape(s.shape)
    y = y + torch.zeros_like(x)  # broadcast to the full grid (1D: already full)
    if fusion == "conv":
        y = torch.einsum("oc,nc...->no...", p["fuse.weight"].flatten(1), relu(y)) + p[
            "fuse.bias"
        ].reshape(1, -1, *[1] * rank)
    torch.testing.assert_close(m.gate(x), sigmoid(y), **TOL)
    torch.testing.assert_close(m(x), x * sigmoid(y), **TOL)


# --- efficient local attention -------------------------------------------------------------


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kernel_size, conv_groups, norm_groups, shared, activation", [
    (7, None, 4, True, "identity"),  # ELA-B layout (depth-wise), smaller C
    (5, 2, 2, True, "identity"),     # ELA-S/L layout: C/8-style grouped conv
    (3, None, 1, False, "silu"),     # timm's EfficientLocalAttn layout
])
def test_efficient_local_attention(rank, kernel_size, conv_groups, norm_groups, shared, activation):
    """y^a = sigmoid(act(GN(F(z^a)))) with one shared F and GN (or one per axis);
    Y = x * prod_a y^a."""
    m = fix_weights(EfficientLocalAttention(
        C, spatial_dims=rank, kernel_size=kernel_size, conv_groups=conv_groups,
        norm_groups=norm_groups, shared=shared, activation=activation,
    ))
    x, p = make_x(rank), params(m)
    groups = C if conv_groups is None else conv_groups
    expected, gates = x, []
    for i, a in enumerate(range(2, x.ndim)):
        j = 0 if shared else i
        s = strip(x, a)
        t = conv1d(s.reshape(2, C, -1), p[f"convs.{j}.weight"], groups=groups)
        t = group_norm(t, norm_groups, p[f"norms.{j}.weight"], p[f"norms.{j}.bias"])
        if activation == "silu":
            t = silu(t)
        g = sigmoid(t).reshape(s.shape)
        gates.append(g)
        expected = expected * g
    for ours, ref in zip(m.gate(x), gates, strict=True):
        torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(m(x), expected, **TOL)
