"""Each module against its paper's equation, written out here independently.

The references use only elementwise ops, sums, matrix products and explicit sliding
windows (no nn layers, no F.conv), in float64, with fixed weights, for 1D, 2D and 3D.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from excite.layers import (
    CBAM,
    ECA,
    SCSE,
    ChannelAttention,
    SpatialAttention,
    SqueezeExcite,
    create_attention,
)

RANKS = (1, 2, 3)
SPATIAL = {1: (12,), 2: (7, 6), 3: (4, 5, 6)}
KERNEL = {1: 7, 2: 5, 3: (3, 5, 5)}  # an int and a per-axis tuple, both odd
BN_EPS = 1e-5


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


def make_x(channels: int, rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234 + rank)
    return torch.randn(2, channels, *SPATIAL[rank], generator=g, dtype=torch.float64)


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


def spatial_max(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], -1).max(-1).values


def conv_same(maps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-correlation with zero 'same' padding, one output channel, written as a sum
    over kernel offsets: out[n, p] = sum_{c, o} w[0, c, o] * maps_padded[n, c, p + o]."""
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


# --- the equations -------------------------------------------------------------------


def se_gate(x, w1, b1, w2, b2):
    """Hu et al. 2018, eq. 2-3: s = sigmoid(W2 relu(W1 z + b1) + b2), z = mean(x)."""
    z = spatial_mean(x)
    return expand(sigmoid(relu(z @ w1.T + b1) @ w2.T + b2), x.ndim)


def cam_gate(x, w0, w1, b0=0.0, b1=0.0, pools=("avg", "max")):
    """Woo et al. 2018, eq. 2: M_c = sigmoid(MLP(avg) + MLP(max)), one shared MLP."""
    descriptors = {"avg": spatial_mean(x), "max": spatial_max(x)}

    def mlp(z):
        return relu(z @ w0.T + b0) @ w1.T + b1

    return expand(sigmoid(sum(mlp(descriptors[p]) for p in pools)), x.ndim)


def sam_gate(x, weight, order=("avg", "max"), bn=None):
    """Woo et al. 2018, eq. 3: M_s = sigmoid(f([mean_c; max_c])), optional BatchNorm."""
    maps = {
        "avg": x.sum(1, keepdim=True) / x.shape[1],
        "max": x.max(1, keepdim=True).values,
    }
    y = conv_same(torch.cat([maps[p] for p in order], 1), weight)
    if bn is not None:
        gamma, beta, mean, var = bn
        y = (y - mean) / torch.sqrt(var + BN_EPS) * gamma + beta
    return sigmoid(y)


def eca_gate(x, w):
    """Wang et al. 2020, eq. 11: omega_i = sigmoid(sum_j w_j y_{i+j-k//2}), zero padded."""
    y = spatial_mean(x)
    n, c = y.shape
    k = w.numel()
    padded = torch.zeros(n, c + k - 1, dtype=x.dtype)
    padded[:, k // 2 : k // 2 + c] = y
    out = sum(w[j] * padded[:, j : j + c] for j in range(k))
    return expand(sigmoid(out), x.ndim)


def circular_eca_gate(x, w):
    """ECA with circular padding (timm's CircularEfficientChannelAttn): one explicit loop
    over channels, neighbour indices taken mod C, so channel 0 and channel C-1 touch."""
    y = spatial_mean(x)
    n, c = y.shape
    k = w.numel()
    out = torch.zeros(n, c, dtype=x.dtype)
    for i in range(c):
        for j in range(k):
            out[:, i] += w[j] * y[:, (i + j - k // 2) % c]
    return expand(sigmoid(out), x.ndim)


def sse_gate(x, w, b):
    """Roy et al. 2018: q = sigmoid(sum_c w_c x_c + b), shape (N, 1, *spatial)."""
    wc = w.reshape(1, -1, *([1] * (x.ndim - 2)))
    return sigmoid((x * wc).sum(1, keepdim=True) + b)


# --- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("rank", RANKS)
def test_squeeze_excite_equation(rank: int) -> None:
    m = fix_weights(SqueezeExcite(8, reduction=4))
    x = make_x(8, rank)
    p = dict(m.named_parameters())
    s = se_gate(x, p["fc1.weight"], p["fc1.bias"], p["fc2.weight"], p["fc2.bias"])
    torch.testing.assert_close(m.gate(x), s, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(m(x), x * s, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("pools", [("avg", "max"), ("max", "avg"), "avg", ("max",)])
@pytest.mark.parametrize("bias", [False, True])
def test_channel_attention_equation(rank: int, pools, bias: bool) -> None:
    m = fix_weights(ChannelAttention(8, reduction=2, pools=pools, bias=bias))
    x = make_x(8, rank)
    p = dict(m.named_parameters())
    b0, b1 = (p["fc1.bias"], p["fc2.bias"]) if bias else (0.0, 0.0)
    pools = (pools,) if isinstance(pools, str) else pools
    s = cam_gate(x, p["fc1.weight"], p["fc2.weight"], b0, b1, pools)
    torch.testing.assert_close(m.gate(x), s, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(m(x), x * s, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("norm", [False, True])
def test_spatial_attention_equation(rank: int, norm: bool) -> None:
    m = fix_weights(SpatialAttention(spatial_dims=rank, kernel_size=KERNEL[rank], norm=norm))
    x = make_x(5, rank)
    p = dict(m.named_parameters())
    bn = None
    if norm:
        bn = (p["norm.weight"], p["norm.bias"], m.norm.running_mean, m.norm.running_var)
    s = sam_gate(x, p["conv.weight"], bn=bn)
    torch.testing.assert_close(m.gate(x), s, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(m(x), x * s, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("arrangement", ["channel-spatial", "spatial-channel", "parallel"])
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_cbam_equation(rank: int, arrangement: str, variant: str) -> None:
    m = fix_weights(
        CBAM(8, spatial_dims=rank, reduction=2, kernel_size=KERNEL[rank],
             arrangement=arrangement, variant=variant)
    )
    x = make_x(8, rank)
    p = dict(m.named_parameters())
    if variant == "paper":  # no MLP bias, [mean, max], no norm
        b0, b1, order, bn = 0.0, 0.0, ("avg", "max"), None
    else:  # official code: MLP bias, [max, mean], BatchNorm after the conv
        b0, b1, order = p["channel.fc1.bias"], p["channel.fc2.bias"], ("max", "avg")
        bn = (p["spatial.norm.weight"], p["spatial.norm.bias"],
              m.spatial.norm.running_mean, m.spatial.norm.running_var)

    def mc(t):
        return cam_gate(t, p["channel.fc1.weight"], p["channel.fc2.weight"], b0, b1)

    def ms(t):
        return sam_gate(t, p["spatial.conv.weight"], order, bn)

    if arrangement == "channel-spatial":  # eq. 1: F' = Mc(F) F, F'' = Ms(F') F'
        f1 = mc(x) * x
        expected = ms(f1) * f1
    elif arrangement == "spatial-channel":
        f1 = ms(x) * x
        expected = mc(f1) * f1
    else:
        expected = x * mc(x) * ms(x)
    torch.testing.assert_close(m(x), expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(x * m.gate(x), expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kernel_size", [None, 1, 5])
def test_eca_equation(rank: int, kernel_size) -> None:
    m = fix_weights(ECA(16, kernel_size=kernel_size))
    x = make_x(16, rank)
    w = m.conv.weight.reshape(-1)
    assert w.numel() == (3 if kernel_size is None else kernel_size)  # log2(16)=4: t=2 -> 3
    s = eca_gate(x, w)
    torch.testing.assert_close(m.gate(x), s, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(m(x), x * s, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kernel_size", [3, 5, 9])
@pytest.mark.parametrize("build", ["padding_mode", "ceca"])
def test_circular_eca_equation(rank: int, kernel_size: int, build: str) -> None:
    if build == "ceca":
        m = create_attention("ceca", 6, kernel_size=kernel_size)
    else:
        m = ECA(6, kernel_size=kernel_size, padding_mode="circular")
    m = fix_weights(m)
    x = make_x(6, rank)
    s = circular_eca_gate(x, m.conv.weight.reshape(-1))
    torch.testing.assert_close(m.gate(x), s, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(m(x), x * s, atol=1e-12, rtol=1e-12)
    # the wrap-around matters: zero padding gives a different map at the last channel
    # (whose right neighbours wrap to channel 0; fix_weights makes w[0] = sin(0) = 0)
    zeros = fix_weights(ECA(6, kernel_size=kernel_size))
    assert not torch.allclose(zeros.gate(x)[:, -1], s[:, -1])


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("combine", ["add", "max"])
def test_scse_equation(rank: int, combine: str) -> None:
    m = fix_weights(SCSE(8, spatial_dims=rank, reduction=4, combine=combine))
    x = make_x(8, rank)
    p = dict(m.named_parameters())
    c = se_gate(x, p["channel.fc1.weight"], p["channel.fc1.bias"],
                p["channel.fc2.weight"], p["channel.fc2.bias"])
    q = sse_gate(x, p["spatial.conv.weight"], p["spatial.conv.bias"])
    expected = x * c + x * q if combine == "add" else torch.maximum(x * c, x * q)
    torch.testing.assert_close(m(x), expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(x * m.gate(x), expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(m.channel.gate(x), c, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(m.spatial.gate(x), q, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize(
    "channels, k",
    # ECA-Net eq. 12 with gamma=2, b=1: t = int((log2 C + 1) / 2), k = t if odd else t + 1
    [(1, 1), (16, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7), (4096, 7)],
)
def test_eca_adaptive_kernel_size(channels: int, k: int) -> None:
    t = int(abs((math.log2(channels) + 1) / 2))
    assert k == (t if t % 2 else t + 1)
    assert ECA(channels).conv.weight.numel() == k
    assert ECA(channels).kernel_size == k
