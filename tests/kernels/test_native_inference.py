"""The native one-call inference path (``native.block_forward``) and its direct 'same'
convolution, against the equations written out in float64 and against the reference path.

A block runs as one C++ call whenever autograd records nothing (``torch.inference_mode``,
``torch.no_grad``, or an input and weights that need no gradient); these tests check that
path at every rank, dtype, layout and option it takes, and that anything needing a
gradient still goes through the autograd functions.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from excite import kernels
from excite.kernels import native
from excite.layers import CBAM, ChannelAttention, SpatialAttention, SqueezeExcite

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native kernels {native.status()}")

FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}
SHAPES = {1: (3, 12, 13), 2: (2, 12, 7, 9), 3: (2, 12, 3, 5, 6)}


def _input(shape, dtype, layout):
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        return x.contiguous(memory_format=FORMATS[x.ndim])
    if layout == "strided":  # neither contiguous nor channels-last
        return torch.randn(*shape[:-1], shape[-1] * 2, dtype=torch.float64).to(dtype)[..., ::2]
    return x


# ------------------------------------------------------------- equations (float64, no nn)
ACT = {
    "relu": lambda h: h.clamp_min(0),
    "silu": lambda h: h / (1 + torch.exp(-h)),
    "gelu": lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2))),
    "tanh": torch.tanh,
    "sigmoid": lambda h: 1 / (1 + torch.exp(-h)),
    "hard_sigmoid": lambda h: (h + 3).clamp(0, 6) / 6,
    "identity": lambda h: h,
}


def _conv_same(maps, w):
    """sum over taps of w[o, i, tap] * maps[n, i, pos + tap - k // 2], zero outside."""
    k = w.shape[2:]
    padded = F.pad(maps, [p for kk in reversed(k) for p in (kk // 2, kk // 2)])
    out = torch.zeros(maps.shape[0], w.shape[0], *maps.shape[2:], dtype=maps.dtype)
    for tap in itertools.product(*[range(kk) for kk in k]):
        window = padded[(slice(None), slice(None), *[slice(t, t + n) for t, n in zip(tap, maps.shape[2:])])]
        out += torch.einsum("ni...,oi->no...", window, w[(slice(None), slice(None), *tap)])
    return out


def _channel_gate(x, fc1, fc2, pools, act, gate):
    axes = tuple(range(2, x.ndim))
    descriptors = {"avg": x.mean(axes), "max": x.amax(axes)}

    def mlp(z):
        h = z @ fc1.weight.double().t() + (0 if fc1.bias is None else fc1.bias.double())
        return ACT[act](h) @ fc2.weight.double().t() + (0 if fc2.bias is None else fc2.bias.double())

    g = ACT[gate](sum(mlp(descriptors[p]) for p in pools))
    return g.reshape(*g.shape, *([1] * len(axes)))


def _spatial_gate(x, conv_weight, pools, gate, affine=(1.0, 0.0)):
    maps = torch.stack([{"avg": x.mean(1), "max": x.amax(1)}[p] for p in pools], 1)
    return ACT[gate](_conv_same(maps, conv_weight.double()) * affine[0] + affine[1])


def _bn_affine(bn):
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale.item(), (bn.bias.double() - bn.running_mean.double() * scale).item()


def _equation(module, x):
    """The module's equation in float64 (SE/M_c: x * M_c; M_s: x * M_s; CBAM: eq. 1)."""
    x = x.double()
    if isinstance(module, (SqueezeExcite, ChannelAttention)):
        return x * _channel_gate(x, module.fc1, module.fc2, module.pools, _name(module.act), _name(module.gate_act))
    if isinstance(module, SpatialAttention):
        return x * _spatial_gate(x, module.conv.weight, module.pools, _name(module.gate_act))
    ch, sp = module.channel, module.spatial
    f1 = x * _channel_gate(x, ch.fc1, ch.fc2, ch.pools, _name(ch.act), _name(ch.gate_act))
    affine = (1.0, 0.0) if isinstance(sp.norm, torch.nn.Identity) else _bn_affine(sp.norm)
    return f1 * _spatial_gate(f1, sp.conv.weight, sp.pools, _name(sp.gate_act), affine)


def _name(activation):
    return kernels.activation_name(activation)


def _official(d):
    m = CBAM(12, spatial_dims=d, reduction=3, kernel_size=3, variant="official")
    with torch.no_grad():  # a trained-looking BatchNorm (running stats, gamma, beta)
        m.spatial.norm.running_mean.fill_(0.3)
        m.spatial.norm.running_var.fill_(2.0)
        m.spatial.norm.weight.fill_(1.5)
        m.spatial.norm.bias.fill_(-0.2)
    return m.eval()


CASES = {
    "se": lambda d: SqueezeExcite(12, reduction=3),
    "se_silu_hardsigmoid": lambda d: SqueezeExcite(12, reduction=3, activation="silu", gate="hard_sigmoid"),
    "cam": lambda d: ChannelAttention(12, reduction=3),
    "cam_avg_gelu_tanh": lambda d: ChannelAttention(12, reduction=3, pools="avg", activation="gelu", gate="tanh"),
    "sam": lambda d: SpatialAttention(12, spatial_dims=d, kernel_size=3),
    "sam_max_avg_k5": lambda d: SpatialAttention(spatial_dims=d, kernel_size=5, pools=("max", "avg")),
    "sam_max_only": lambda d: SpatialAttention(spatial_dims=d, kernel_size=3, pools="max"),
    "cbam": lambda d: CBAM(12, spatial_dims=d, reduction=3, kernel_size=3),
    "cbam_k7": lambda d: CBAM(12, spatial_dims=d, reduction=3),
    "cbam_official": _official,
}


def _with_impl(module, impl):
    for sub in module.modules():
        if hasattr(sub, "impl"):
            sub.impl = impl
    return module


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_inference_matches_the_equations_in_float64(name, d, layout) -> None:
    if layout == "channels_last" and d == 1:
        pytest.skip("1D has no channels_last format")
    torch.manual_seed(0)
    module = _with_impl(CASES[name](d).double().eval(), "native")
    for p in module.parameters():  # weights well away from 0 so every term matters
        if p.ndim > 1:
            torch.nn.init.normal_(p, std=0.5)
    x = _input(SHAPES[d], torch.float64, layout)
    with torch.inference_mode():
        got = module(x)
    torch.testing.assert_close(got, _equation(module, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_inference_equals_the_reference_path(name, d, dtype) -> None:
    """Lower precision: the same result as the reference path, which computes in x's
    dtype (float32: to 1e-5; half: as close to float64 as the reference is, plus an ulp)."""
    torch.manual_seed(0)
    module = CASES[name](d).eval()
    x = _input(SHAPES[d], torch.float64, "contiguous")
    with torch.no_grad():
        truth = _with_impl(module.double(), "reference")(x)
        module = module.to(dtype)
        want = _with_impl(module, "reference")(x.to(dtype))
        got = _with_impl(module, "native")(x.to(dtype))
    assert got.dtype == dtype and got.shape == x.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    else:
        err = lambda a: (a.double() - truth).abs().max().item()  # noqa: E731
        assert err(got) <= 2 * err(want) + 1e-2 * truth.abs().max().item()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_inference_output_is_fresh_and_laid_out_as_the_input(layout) -> None:
    x = _input((2, 12, 5, 6), torch.float32, layout)
    with torch.inference_mode():
        out = _with_impl(CBAM(12, reduction=3), "native")(x)
    assert not out._is_view() and out.data_ptr() != x.data_ptr()
    want = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert out.is_contiguous(memory_format=want)


def test_inference_empty_batch_and_autocast() -> None:
    m = _with_impl(CBAM(12, reduction=3).eval(), "native")
    with torch.inference_mode():
        assert m(torch.randn(0, 12, 4, 4)).shape == (0, 12, 4, 4)
        x = torch.randn(2, 12, 6, 5)
        want = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(x)  # the block chooses its own compute dtype: x's (float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)


def test_gradients_still_flow_through_the_autograd_functions(monkeypatch) -> None:
    """Only a call that records nothing takes the one-call path: weights that need a
    gradient (an input that does not) still get one, equal to the reference path's."""
    calls = []
    real = native.load().block_forward
    monkeypatch.setattr(native.load(), "block_forward", lambda *a: calls.append(1) or real(*a), raising=False)
    torch.manual_seed(0)
    m = CBAM(12, reduction=3)
    x = torch.randn(2, 12, 5, 6)  # no requires_grad
    kernels_out = _with_impl(m, "native")(x)
    kernels_out.sum().backward()
    native_grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    _with_impl(m, "reference")(x).sum().backward()
    for a, b in zip(native_grads, [p.grad for p in m.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert calls == []
    with torch.no_grad():
        _with_impl(m, "native")(x)
    assert calls == [1]


# ------------------------------------------------------------------ the direct convolution
@pytest.mark.parametrize(
    "spatial, kernel",
    [((17,), (5,)), ((70,), (11,)), ((6, 9), (3, 7)), ((40, 37), (7, 7)), ((4, 5, 6), (3, 5, 3)), ((2, 3), (7, 7))],
)
@pytest.mark.parametrize("cin, cout", [(2, 1), (1, 2), (3, 2)])
def test_conv_same_and_its_gradients_match_the_sums(spatial, kernel, cin, cout) -> None:
    """Forward against the sliding-window sum (kernels larger than the map included);
    input and weight gradients against autograd through that sum."""
    mod = native.load()
    torch.manual_seed(0)
    maps = torch.randn(2, cin, *spatial, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin, *kernel, dtype=torch.float64, requires_grad=True)
    want = _conv_same(maps, w)
    torch.testing.assert_close(mod.conv_same(maps.detach(), w.detach()), want.detach(), rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(want)
    dmaps, dw = torch.autograd.grad(want, (maps, w), grad)
    torch.testing.assert_close(mod.conv_same_input_grad(grad, w.detach()), dmaps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        mod.conv_same_weight_grad(maps.detach(), grad, list(kernel)), dw, rtol=1e-12, atol=1e-12
    )
    # float32 too (the compute dtype of half inputs; its own vectorised kernels)
    m32, w32, g32 = maps.detach().float(), w.detach().float(), grad.float()
    torch.testing.assert_close(mod.conv_same(m32, w32), want.detach().float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mod.conv_same_input_grad(g32, w32), dmaps.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mod.conv_same_weight_grad(m32, g32, list(kernel)), dw.float(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["se", "cam", "sam", "cbam", "cbam_official"])
@pytest.mark.parametrize("shape", [(5, 12, 1, 1), (3, 12, 1), (2, 12, 2, 1, 3)])
def test_one_position_and_tiny_maps_forward_and_backward(name, shape) -> None:
    """S = 1 (a 1x1 map, where the NCS and channels-last memory coincide and the kernels
    take the channels-last loops) and maps of a few positions: inference and training
    against the reference path in float64."""
    torch.manual_seed(0)
    d = len(shape) - 2
    module = CASES[name](d).double()
    x = torch.randn(shape, dtype=torch.float64)
    gy = torch.randn(shape, dtype=torch.float64)
    results = {}
    for impl in ("reference", "native"):
        _with_impl(module, impl)
        with torch.no_grad():
            inference = module(x)
        xx = x.clone().requires_grad_(True)
        module.zero_grad()
        module(xx).backward(gy)
        results[impl] = [inference, xx.grad] + [p.grad.clone() for p in module.parameters()]
    for got, want in zip(results["native"], results["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["se", "cbam"])
def test_outputs_beyond_the_caches_are_streamed_correctly(name) -> None:
    """Float32 outputs of 16 to 32 MiB are written with streaming stores, rows starting
    at any alignment (S = 255 * 690 is not a multiple of 8): the same values as the
    reference path."""
    torch.manual_seed(0)
    module = CASES[name](2).eval()
    x = torch.randn(2, 12, 255, 690)
    assert 16 << 20 <= x.numel() * 4 <= 32 << 20
    with torch.inference_mode():
        want = _with_impl(module, "reference")(x)
        got = _with_impl(module, "native")(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
