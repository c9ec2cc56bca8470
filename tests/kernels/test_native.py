"""The native CPU kernels (C++): equal to the equations and the reference path, in-place safe.

Skips when the extension cannot be built here (no compiler); CI builds it on first use.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from excite import kernels
from excite.kernels import native
from excite.layers import CBAM, ChannelAttention, SpatialAttention, SqueezeExcite

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native kernels {native.status()}")

FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def _input(shape, dtype, layout):
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=FORMATS[x.ndim])
    elif layout == "strided":  # neither contiguous nor channels-last: copied once
        x = torch.randn(*shape[:-1], shape[-1] * 2, dtype=dtype)[..., ::2]
    return x


def _equations(x, w1, w2, wc):
    """CBAM (Woo et al. eq. 1-3) in float64 with explicit sums, no nn layers."""
    x = x.double()
    axes = tuple(range(2, x.ndim))
    mlp = lambda z: torch.relu(z @ w1.double().t()) @ w2.double().t()  # noqa: E731
    mc = torch.sigmoid(mlp(x.mean(axes)) + mlp(x.amax(axes)))
    f1 = x * mc.view(*mc.shape, *([1] * len(axes)))
    maps = torch.stack([f1.mean(1), f1.amax(1)], 1)  # (N, 2, *spatial)
    k = wc.shape[-1]
    padded = torch.nn.functional.pad(maps, [k // 2] * (2 * len(axes)))
    conv = torch.zeros(maps.shape[0], *maps.shape[2:], dtype=torch.float64)
    for offset in torch.cartesian_prod(*[torch.arange(k)] * len(axes)).reshape(-1, len(axes)).tolist():
        window = padded[(slice(None), slice(None), *[slice(o, o + n) for o, n in zip(offset, maps.shape[2:])])]
        conv += (window * wc.double()[0][(slice(None), *offset)].view(1, 2, *([1] * len(axes)))).sum(1)
    return f1 * torch.sigmoid(conv).unsqueeze(1)


@pytest.mark.parametrize("shape", [(2, 8, 11), (2, 8, 5, 6), (1, 8, 3, 4, 5)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_native_cbam_matches_the_equations(shape, layout) -> None:
    if layout == "channels_last" and len(shape) == 3:
        pytest.skip("1D has no channels_last format")
    torch.manual_seed(0)
    m = CBAM(shape[1], spatial_dims=len(shape) - 2, reduction=2, kernel_size=3, impl="native").double()
    x = _input(shape, torch.float64, layout)
    want = _equations(x, m.channel.fc1.weight, m.channel.fc2.weight, m.spatial.conv.weight)
    torch.testing.assert_close(m(x), want, rtol=1e-12, atol=1e-12)


CASES = {
    "se": lambda d: SqueezeExcite(16, reduction=4),
    "cam": lambda d: ChannelAttention(16, reduction=4, activation="silu"),
    "sam": lambda d: SpatialAttention(16, spatial_dims=d, kernel_size=3, pools=("max", "avg")),
    "cbam": lambda d: CBAM(16, spatial_dims=d, reduction=4, kernel_size=3),
    "cbam_official": lambda d: CBAM(16, spatial_dims=d, reduction=4, kernel_size=3, variant="official").eval(),
}


def _run(module, impl, x, gy):
    for sub in module.modules():
        if hasattr(sub, "impl"):
            sub.impl = impl
    params = [p for p in module.parameters()]
    for p in params:
        p.grad = None
    xx = x.clone().requires_grad_(True)
    out = module(xx)
    out.backward(gy)
    return [out.detach(), xx.grad] + [p.grad.clone() for p in params]


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-6)).item()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_native_equals_reference_forward_and_backward(name, d, dtype, layout) -> None:
    """float32: native == reference to 2e-5; bfloat16: the output and the weights'
    gradients are as close to the float64 reference as the bfloat16 reference path is
    (within 2x plus one bf16 ulp). (bfloat16's dx is left out: rounding F' = x * M_c to
    bfloat16 makes channel maxima tie, and the fused kernels route a tie's gradient to
    one element where ``amax`` splits it — both valid subgradients, far apart.)"""
    if layout == "channels_last" and d == 1:
        pytest.skip("1D has no channels_last format")
    torch.manual_seed(0)
    module = CASES[name](d)
    shape = (3, 16, *([5, 6, 4][:d]))
    x = _input(shape, dtype, layout)
    gy = torch.randn(shape, dtype=dtype)
    truth = _run(module.double(), "reference", x.double(), gy.double())
    module = module.to(dtype)
    got, want = _run(module, "native", x, gy), _run(module, "reference", x, gy)
    for i, (a, b, t) in enumerate(zip(got, want, truth)):
        if dtype == torch.float32:
            assert _rel(a, b) < 2e-5
        elif i != 1:  # 1 is dx
            assert _rel(a, t) <= 2 * _rel(b, t) + 8e-3


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("impl", ["native", "fused", "reference"])
def test_output_can_be_modified_in_place(name, impl) -> None:
    """Residual blocks do ``out += identity`` on the attention's output (torchvision, timm)."""
    module = CASES[name](2)
    for sub in module.modules():
        if hasattr(sub, "impl"):
            sub.impl = impl
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    out = module(x)
    assert not out._is_view()
    out += 1.0
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_empty_batch() -> None:
    m = CBAM(8, reduction=2, impl="native")
    x = torch.randn(0, 8, 4, 4, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_auto_picks_native_on_cpu_and_fused_under_compile() -> None:
    # the native kernels at every size and kind, with gradients (training) or without
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    big = torch.empty(2, 16, 64, 64, requires_grad=True)
    half = torch.empty(1, 1024, 32, 32, dtype=torch.bfloat16, requires_grad=True)
    for t in (x, big, half):
        for kind in ("spatial", "channel"):
            assert kernels.resolve_impl("auto", t, kind=kind) == "native"
    # no gradient (inference): the one-call native block at every size and kind
    for t in (x, big, half):
        for kind in ("spatial", "channel"):
            assert kernels.resolve_impl("auto", t.detach(), kind=kind) == "native"
            with torch.no_grad():
                assert kernels.resolve_impl("auto", t, kind=kind) == "native"

    @torch.compile(backend="eager", fullgraph=True)
    def under_compile(t):
        return torch.tensor(1.0) if kernels.resolve_impl("auto", t) == "fused" else torch.tensor(0.0)

    assert under_compile(big).item() == 1.0
    with pytest.raises(ValueError, match="impl='native' runs CPU tensors"):
        kernels.resolve_impl("native", torch.randn(2, 8, 4, 4, device="meta"))


def test_without_the_extension_auto_keeps_the_pytorch_path() -> None:
    code = (
        "import torch; from excite import kernels; from excite.kernels import native; "
        "x = torch.randn(2, 8, 4, 4); "
        "assert not native.available() and 'EXCITE_NATIVE=0' in native.status(); "
        "assert kernels.resolve_impl('auto', x) == 'fused'; "
        "import excite; m = excite.CBAM(8, reduction=2); m(x).sum()"
    )
    env = {**os.environ, "EXCITE_NATIVE": "0"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_native_kernels_directly() -> None:
    """The one-pass kernels against torch's reductions, both layouts, with argmax."""
    mod = native.load()
    for x in (torch.randn(2, 5, 300), torch.randn(2, 300, 5).transpose(1, 2)):
        avg, mx, idx = mod.global_pools(x, True, True, True)
        torch.testing.assert_close(avg, x.mean(2))
        assert torch.equal(mx, x.amax(2)) and torch.equal(idx, x.argmax(2))
        g = torch.rand(2, 5)
        maps, cidx = mod.gated_channel_pools(x, g, False, True, True, True)  # [max, mean]
        y = x * g.unsqueeze(-1)
        torch.testing.assert_close(maps[:, 1], y.mean(1))
        assert torch.equal(maps[:, 0], y.amax(1)) and torch.equal(cidx, y.argmax(1))
        dy, s = torch.randn_like(x), torch.rand(2, 300)
        ds, dg = mod.grad_stats(dy, x, g, s, True, True)
        torch.testing.assert_close(ds, (g.unsqueeze(-1) * dy * x).sum(1))
        torch.testing.assert_close(dg, (dy * x * s.unsqueeze(1)).sum(2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_native_under_cpu_autocast_and_deterministic_mode(name) -> None:
    """bf16 autocast: native is as close to the float64 result as the reference path under
    the same autocast is (within 2x plus one bf16 ulp); deterministic mode: two runs give
    bit-identical outputs and gradients."""
    import copy

    torch.manual_seed(0)
    module = CASES[name](2)
    x = torch.randn(2, 16, 9, 8)
    gy = torch.randn(2, 16, 9, 8)
    truth = _run(copy.deepcopy(module).double(), "reference", x.double(), gy.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = _run(module, "native", x, gy), _run(module, "reference", x, gy)
    for i, (a, b, t) in enumerate(zip(got, want, truth)):
        if i != 1:  # dx: bf16 ties in the max pools route gradients differently (see above)
            assert _rel(a, t) <= 2 * _rel(b, t) + 8e-3
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = _run(module, "native", x, gy), _run(module, "native", x, gy)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_saved_for_backward_stays_within_a_tenth_of_the_input(dtype) -> None:
    """What the native CBAM keeps for backward (autograd's saved storages, weights
    excluded): x, plus per position the maps in x's dtype, a one-byte argmax channel and
    the spatial gate; at C = 64 within 1.1x the input in float32 and bfloat16 alike."""
    m = CBAM(64, reduction=16, impl="native").to(dtype)
    x = torch.randn(2, 64, 20, 24, dtype=dtype, requires_grad=True)
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(x)
    assert sum(seen.values()) / (x.numel() * x.element_size()) <= 1.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("s", [1, 5, 8, 15, 16, 17, 31, 33, 49, 70, 3136])
def test_global_pool_argmax_is_the_first_maximum(s, dtype) -> None:
    """Rows full of ties (small integers), of every length the vector loops split
    differently (16 at a time, 8 at a time, a masked tail): the max and its position are
    torch.max's (the first occurrence), a row of -inf gives position 0, and the mean is
    the row's sum / S."""
    torch.manual_seed(s)
    x = torch.randint(-3, 4, (3, 5, s)).to(dtype)
    x[0, 0] = float("-inf")
    x[1, 2, s // 2] = 7  # one clear maximum in the middle of a row
    avg, mx, idx = native.load().global_pools(x, True, True, True)
    want_max, want_idx = x.max(dim=2)
    assert torch.equal(mx, want_max)
    assert torch.equal(idx, want_idx)
    torch.testing.assert_close(avg.double(), x.double().mean(dim=2))
