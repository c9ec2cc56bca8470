"""The zoo's part B (sk, bam, gct, fca, srm, nonlocal) against the papers' equations.

Every reference here is written out from the paper in float64 with elementwise ops,
sums, einsum and explicit sliding windows (no nn layers, no F.conv / pooling), for 1D,
2D and 3D, with fixed non-symmetric weights. Other test files import the helpers.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from excite.layers import (
    BAM,
    GCT,
    SRM,
    MultiSpectralAttention,
    NonLocal,
    SelectiveKernel,
)

RANKS = (1, 2, 3)
SPATIAL = {1: (12,), 2: (6, 5), 3: (4, 4, 5)}
BN_EPS = 1e-5
ATOL = dict(atol=1e-10, rtol=1e-10)


# --- helpers -------------------------------------------------------------------------


def fix_weights(module: torch.nn.Module) -> torch.nn.Module:
    """Deterministic, non-symmetric weights (zero-initialised ones too); BatchNorm
    statistics set; float64; eval mode."""
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(module.named_parameters())):
            values = torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 0.7 + i) * 0.6
            p.copy_(values.reshape(p.shape))
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.linspace(-0.3, 0.4, buf.numel()))
            elif name.endswith("running_var"):
                buf.copy_(torch.linspace(0.5, 1.9, buf.numel()))
    return module.double().eval()


def make_x(channels: int, rank: int, spatial: tuple[int, ...] | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(4321 + rank)
    return torch.randn(2, channels, *(spatial or SPATIAL[rank]), generator=g, dtype=torch.float64)


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def relu(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > 0, t, torch.zeros_like(t))


def expand(s: torch.Tensor, ndim: int) -> torch.Tensor:
    """(N, C) -> (N, C, 1, ..., 1)."""
    return s.reshape(*s.shape, *([1] * (ndim - 2)))


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return flat.sum(-1) / flat.shape[-1]


def batch_norm(x: torch.Tensor, p: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """Eval-mode BatchNorm over dim 1: (x - mean) / sqrt(var + eps) * gamma + beta."""
    shape = (1, -1, *([1] * (x.ndim - 2)))
    mean, var = p[prefix + "running_mean"].reshape(shape), p[prefix + "running_var"].reshape(shape)
    gamma, beta = p[prefix + "weight"].reshape(shape), p[prefix + "bias"].reshape(shape)
    return (x - mean) / torch.sqrt(var + BN_EPS) * gamma + beta


def conv(x, weight, bias=None, *, dilation=None, groups: int = 1) -> torch.Tensor:
    """Cross-correlation with zero 'same' padding (dilation * (k // 2) per axis), as a sum
    over kernel offsets: out[n, o, p] = sum_{offset, c in group(o)} w[o, c, offset] *
    x_padded[n, c, p + offset * dilation]."""
    n, cin, *size = x.shape
    cout, cin_g, *kernel = weight.shape
    dilation = dilation or (1,) * len(size)
    pad = [d * (k // 2) for k, d in zip(kernel, dilation)]
    padded = torch.zeros(n, cin, *(s + 2 * p for s, p in zip(size, pad)), dtype=x.dtype)
    padded[(slice(None), slice(None), *(slice(p, p + s) for p, s in zip(pad, size)))] = x
    out = torch.zeros(n, groups, cout // groups, *size, dtype=x.dtype)
    w = weight.reshape(groups, cout // groups, cin_g, *kernel)
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = padded[(slice(None), slice(None),
                         *(slice(o * d, o * d + s) for o, d, s in zip(offset, dilation, size)))]
        window = window.reshape(n, groups, cin_g, *size)
        out = out + torch.einsum("ngc...,goc->ngo...", window, w[(Ellipsis, *offset)])
    out = out.reshape(n, cout, *size)
    if bias is not None:
        out = out + expand(bias.unsqueeze(0), out.ndim)
    return out


def conv1x1(x, weight, bias=None) -> torch.Tensor:
    """A 1 x ... x 1 convolution: a matrix product over channels at every position."""
    out = torch.einsum("oc,nc...->no...", weight.reshape(weight.shape[0], -1), x)
    return out if bias is None else out + expand(bias.unsqueeze(0), out.ndim)


def max_pool_ceil(x: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    """Max over non-overlapping windows of size ``kernel`` (stride = kernel), the last
    window cut by the border when the size is not a multiple (ceil mode)."""
    n, c, *size = x.shape
    padded_size = [math.ceil(s / k) * k for s, k in zip(size, kernel)]
    padded = torch.full((n, c, *padded_size), -math.inf, dtype=x.dtype)
    padded[(slice(None), slice(None), *(slice(0, s) for s in size))] = x
    shape = [n, c]
    for s, k in zip(padded_size, kernel):
        shape += [s // k, k]
    blocks = padded.reshape(shape)
    return blocks.amax(dim=tuple(range(3, len(shape), 2)))


# --- SK (Li et al. 2019, eq. 1-6) ----------------------------------------------------


def sk_reference(m: SelectiveKernel, x: torch.Tensor, kernels, *, split: bool, groups: int):
    p = params(m)
    branches = []
    inputs = x.chunk(len(kernels), 1) if split else [x] * len(kernels)
    for i, (kernel, xi) in enumerate(zip(kernels, inputs)):
        kernel = (kernel,) * (x.ndim - 2) if isinstance(kernel, int) else kernel
        dilation = tuple(max(1, (k - 1) // 2) for k in kernel)  # 5 -> 3 with dilation 2
        u = conv(xi, p[f"branches.{i}.conv.weight"], dilation=dilation, groups=groups)
        branches.append(relu(batch_norm(u, p, f"branches.{i}.bn.")))
    s = spatial_mean(sum(branches))  # eq. 1-2: fuse by summation, then GAP
    z = relu(batch_norm(s @ p["reduce.weight"].T, p, "reduce_norm."))  # eq. 3-4
    logits = (z @ p["select.weight"].T).reshape(x.shape[0], len(kernels), x.shape[1])
    a = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)  # eq. 5
    v = sum(expand(a[:, i], x.ndim) * u for i, u in enumerate(branches))  # eq. 6
    return v, a


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize(
    "kernels, split, groups",
    [((3, 5), False, 1), ((3, 5, 7), True, 2), ("per-axis", False, 4)],
)
def test_selective_kernel_equation(rank: int, kernels, split: bool, groups: int) -> None:
    if kernels == "per-axis":  # a 1-sized axis stays undilated
        kernels = ((3,) * rank, (1,) * (rank - 1) + (5,))
    m = fix_weights(SelectiveKernel(12, spatial_dims=rank, kernel_sizes=kernels, split_input=split,
                                    groups=groups, min_hidden=5))
    x = make_x(12, rank)
    v, a = sk_reference(m, x, kernels, split=split, groups=groups)
    torch.testing.assert_close(m(x), v, **ATOL)
    torch.testing.assert_close(m.gate(x), a.reshape(*a.shape, *[1] * rank), **ATOL)
    assert m.reduce.out_features == 5  # d = max(12 // 16, L = 5)


# --- BAM (Park et al. 2018, eq. 1-4) -------------------------------------------------


def bam_reference(m: BAM, x: torch.Tensor, dilation: int) -> torch.Tensor:
    p = params(m)
    # M_c = BN(W1 relu(W0 AvgPool(F) + b0) + b1)
    h = relu(spatial_mean(x) @ p["channel.fc1.weight"].T + p["channel.fc1.bias"])
    mc = batch_norm(h @ p["channel.fc2.weight"].T + p["channel.fc2.bias"], p, "channel.norm.")
    # M_s = BN(f3(f2(f1(f0(F))))), BN + ReLU between the convolutions
    f = relu(batch_norm(conv1x1(x, p["spatial.reduce.weight"], p["spatial.reduce.bias"]),
                        p, "spatial.reduce_norm."))
    for i in range(2):
        f = conv(f, p[f"spatial.dilated{i}.weight"], p[f"spatial.dilated{i}.bias"],
                 dilation=(dilation,) * (x.ndim - 2))
        f = relu(batch_norm(f, p, f"spatial.dilated{i}_norm."))
    ms = batch_norm(conv1x1(f, p["spatial.final.weight"], p["spatial.final.bias"]), p, "spatial.norm.")
    attention = sigmoid(expand(mc, x.ndim) + ms)  # M(F) = sigma(M_c + M_s)
    return x + x * attention, attention  # F' = F + F ⊙ M(F)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("dilation", [1, 2])
def test_bam_equation(rank: int, dilation: int) -> None:
    m = fix_weights(BAM(16, spatial_dims=rank, reduction=4, dilation=dilation))
    x = make_x(16, rank)
    y, attention = bam_reference(m, x, dilation)
    torch.testing.assert_close(m(x), y, **ATOL)
    torch.testing.assert_close(m.gate(x), attention, **ATOL)


# --- GCT (Yang et al. 2020, eq. 1-3) -------------------------------------------------


def gct_reference(m: GCT, x: torch.Tensor, mode: str, eps: float = 1e-5) -> torch.Tensor:
    alpha, gamma, beta = m.alpha, m.gamma, m.beta
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    c = x.shape[1]
    if mode == "l2":
        s = alpha * torch.sqrt((flat * flat).sum(-1) + eps)  # eq. 1
        s_hat = math.sqrt(c) * s / torch.sqrt((s * s).sum(1, keepdim=True) + eps)  # eq. 2
    else:
        s = alpha * flat.abs().sum(-1)
        s_hat = c * s / (s.abs().sum(1, keepdim=True) + eps)
    return expand(1 + torch.tanh(gamma * s_hat + beta), x.ndim)  # eq. 3


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("mode", ["l2", "l1"])
def test_gct_equation(rank: int, mode: str) -> None:
    m = fix_weights(GCT(8, mode=mode))
    x = make_x(8, rank)
    g = gct_reference(m, x, mode)
    torch.testing.assert_close(m.gate(x), g, **ATOL)
    torch.testing.assert_close(m(x), x * g, **ATOL)


def test_gct_starts_as_identity() -> None:
    """alpha = 1, gamma = beta = 0 (the paper's init): the gate is exactly 1."""
    m = GCT(6).double()
    x = make_x(6, 2)
    assert torch.equal(m(x), x)
    assert torch.equal(m.alpha.detach(), torch.ones(6, dtype=torch.float64))


# --- FcaNet (Qin et al. 2021, eq. 8-10) ----------------------------------------------

# the paper's "top" order on the 7 x 7 grid, first 16 (u along H, v along W)
TOP16 = [(0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
         (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2)]


def dct(u: int, pos: int, size: int) -> float:
    """The orthonormal DCT-II basis value of frequency u at position pos."""
    c = math.sqrt(1.0 / size) if u == 0 else math.sqrt(2.0 / size)
    return c * math.cos(math.pi * u * (pos + 0.5) / size)


def adaptive_avg_pool(x: torch.Tensor, out_size: tuple[int, ...]) -> torch.Tensor:
    """PyTorch's adaptive average pooling written out: output cell p averages input
    positions floor(p S / D) .. ceil((p + 1) S / D) - 1 on every axis."""
    n, c, *size = x.shape
    out = torch.zeros(n, c, *out_size, dtype=x.dtype)
    for cell in itertools.product(*(range(d) for d in out_size)):
        window = tuple(slice(math.floor(p * s / d), math.ceil((p + 1) * s / d))
                       for p, s, d in zip(cell, size, out_size))
        out[(slice(None), slice(None), *cell)] = x[(slice(None), slice(None), *window)].mean(
            dim=tuple(range(2, x.ndim)))
    return out


def fca_reference(m: MultiSpectralAttention, x: torch.Tensor, freqs, dct_size) -> torch.Tensor:
    pooled = adaptive_avg_pool(x, dct_size)  # the paper's input at the DCT size
    n, c = x.shape[:2]
    k = len(freqs)
    freq = torch.zeros(n, c, dtype=x.dtype)
    for ch in range(c):
        f = freqs[ch * k // c]  # channel group of channel ch
        for cell in itertools.product(*(range(d) for d in dct_size)):
            b = math.prod(dct(u, pos, d) for u, pos, d in zip(f, cell, dct_size))
            freq[:, ch] += pooled[(slice(None), ch, *cell)] * b  # eq. 8-9
    p = params(m)
    return expand(sigmoid(relu(freq @ p["fc1.weight"].T) @ p["fc2.weight"].T), x.ndim)  # eq. 10


@pytest.mark.parametrize(
    "rank, spatial, dct_size, frequencies, expected",
    [
        # 1D: (v,) of the table, 12 positions pooled to 7 (overlapping windows)
        (1, (12,), (7,), "top16", [(v,) for _, v in TOP16]),
        # 2D: the table itself, at the DCT size (no pooling) and pooled from 9 x 10
        (2, (7, 7), (7, 7), "top16", TOP16),
        (2, (9, 10), (7, 7), "top4", TOP16[:4]),
        # 2D at 14 x 14: indices scaled by 14 // 7 = 2 (the authors' rule)
        (2, (14, 14), (14, 14), "top8", [(2 * u, 2 * v) for u, v in TOP16[:8]]),
        # 3D: (0, u, v), a 3 x 4 x 5 map spread over a 2 x 7 x 7 DCT (windows of one)
        (3, (3, 4, 5), (2, 7, 7), "top16", [(0, u, v) for u, v in TOP16]),
        # explicit frequencies, one channel group each of unequal size (16 / 3)
        (3, (4, 3, 2), (3, 3, 2), [(1, 0, 1), (0, 2, 0), (2, 1, 1)], [(1, 0, 1), (0, 2, 0), (2, 1, 1)]),
    ],
)
def test_fca_equation(rank, spatial, dct_size, frequencies, expected) -> None:
    m = fix_weights(MultiSpectralAttention(16, spatial_dims=rank, reduction=4,
                                           frequencies=frequencies, dct_size=dct_size))
    assert [tuple(f) for f in m.frequencies] == [tuple(f) for f in expected]
    x = make_x(16, rank, spatial)
    s = fca_reference(m, x, expected, dct_size)
    torch.testing.assert_close(m.gate(x), s, **ATOL)
    torch.testing.assert_close(m(x), x * s, **ATOL)


def test_fca_dc_frequency_is_global_average_pooling() -> None:
    """The paper's Theorem 1: GAP is the DCT's lowest frequency, so FCA with only
    f = 0 is SE (without biases) on sqrt(D^d) GAP = 7 GAP at D = 7 x 7."""
    m = fix_weights(MultiSpectralAttention(8, spatial_dims=2, reduction=2, frequencies="top1"))
    x = make_x(8, 2, (7, 7))
    p = params(m)
    gap = spatial_mean(x)
    s = sigmoid(relu(gap * 7.0 @ p["fc1.weight"].T) @ p["fc2.weight"].T)
    torch.testing.assert_close(m.gate(x), expand(s, 4), **ATOL)


def test_fca_3d_default_is_the_spectrum_of_the_temporal_mean() -> None:
    """At rank 3 a named selection has frequency 0 along T and the default DCT size 1
    there: the map of a clip equals the 2D module's on its temporal mean (and on a clip of
    identical frames, the 2D map of one frame)."""
    m3 = MultiSpectralAttention(16, spatial_dims=3, reduction=4)
    assert m3.dct_size == (1, 7, 7) and all(f[0] == 0 for f in m3.frequencies)
    assert MultiSpectralAttention(16, spatial_dims=3, frequencies=[(1, 0, 0)]).dct_size == (7, 7, 7)
    m2 = fix_weights(MultiSpectralAttention(16, spatial_dims=2, reduction=4))
    m3 = fix_weights(m3)
    clip = make_x(16, 3, (5, 9, 8))
    mean = clip.sum(2) / clip.shape[2]
    torch.testing.assert_close(m3.gate(clip).squeeze(2), m2.gate(mean), **ATOL)
    frames = clip[:, :, :1].expand_as(clip)
    torch.testing.assert_close(m3(frames)[:, :, 2], m2(clip[:, :, 0]), **ATOL)


# --- SRM (Lee et al. 2019, eq. 1-6) --------------------------------------------------


def srm_reference(m: SRM, x: torch.Tensor, *, unbiased: bool, styles, eps: float = 1e-5):
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    positions = flat.shape[-1]
    mu = flat.sum(-1) / positions  # eq. 1
    var = ((flat - mu.unsqueeze(-1)) ** 2).sum(-1) / (positions - 1 if unbiased else positions)
    sigma = torch.sqrt(var + eps)  # eq. 2
    t = torch.stack([{"mean": mu, "std": sigma}[s] for s in styles], -1)  # eq. 3
    p = params(m)
    z = (t * p["cfc"]).sum(-1)  # eq. 4: channel-wise FC
    return expand(sigmoid(batch_norm(z, p, "norm.")), x.ndim)  # eq. 5-6


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("unbiased, styles", [(False, ("mean", "std")), (True, ("std", "mean")), (False, "std")])
def test_srm_equation(rank: int, unbiased: bool, styles) -> None:
    m = fix_weights(SRM(8, unbiased=unbiased, styles=styles))
    x = make_x(8, rank)
    g = srm_reference(m, x, unbiased=unbiased, styles=(styles,) if isinstance(styles, str) else styles)
    torch.testing.assert_close(m.gate(x), g, **ATOL)
    torch.testing.assert_close(m(x), x * g, **ATOL)


# --- Non-local (Wang et al. 2018, eq. 1-2, 6) ----------------------------------------


def non_local_reference(m: NonLocal, x: torch.Tensor, *, mode: str, kernel, scale: float):
    p = params(m)
    n, c, *size = x.shape
    theta = conv1x1(x, p["theta.weight"], p["theta.bias"]).reshape(n, -1, math.prod(size))
    phi = conv1x1(x, p["phi.weight"], p["phi.bias"])
    g = conv1x1(x, p["g.weight"], p["g.bias"])
    if kernel is not None:  # the paper's sub-sampling: max pooling after phi and g
        phi, g = max_pool_ceil(phi, kernel), max_pool_ceil(g, kernel)
    phi, g = phi.reshape(n, phi.shape[1], -1), g.reshape(n, g.shape[1], -1)
    pair = torch.einsum("nki,nkj->nij", theta, phi) * scale  # theta(x_i)^T phi(x_j)
    if mode == "embedded_gaussian":
        f = torch.exp(pair)
        weights = f / f.sum(-1, keepdim=True)  # C(x) = sum_j f
    else:
        weights = pair / phi.shape[-1]  # C(x) = N
    y = torch.einsum("nij,nkj->nki", weights, g).reshape(n, -1, *size)  # eq. 1
    z = batch_norm(conv1x1(y, p["w_z.weight"], p["w_z.bias"]), p, "norm.") + x  # eq. 6
    return z, weights


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize(
    "mode, subsample, scale",
    [("embedded_gaussian", None, 1.0), ("dot_product", None, 1.0),
     ("embedded_gaussian", 2, "channels"), ("dot_product", "video", 0.5)],
)
def test_non_local_equation(rank: int, mode: str, subsample, scale) -> None:
    kernel = None
    if subsample == 2:
        kernel = (2,) * rank  # 5 is odd: a last window cut by the border (ceil mode)
    elif subsample == "video":
        kernel = (1,) * (rank - 1) + (2,)  # the paper's (1, 2, 2) in spirit: not the first axis
    m = fix_weights(NonLocal(8, spatial_dims=rank, mode=mode, subsample=kernel, scale=scale))
    x = make_x(8, rank)
    s = 8 ** -0.5 if scale == "channels" else scale
    z, weights = non_local_reference(m, x, mode=mode, kernel=kernel, scale=s)
    torch.testing.assert_close(m(x), z, **ATOL)
    torch.testing.assert_close(m.gate(x), weights, **ATOL)


def test_non_local_starts_as_identity() -> None:
    """The BatchNorm after W_z starts at zero (the paper), so a new block returns x."""
    m = NonLocal(8, spatial_dims=3).eval()
    x = torch.randn(2, 8, 2, 3, 3)
    assert torch.equal(m(x), x)
    assert torch.equal(m.norm.weight.detach(), torch.zeros(8))
