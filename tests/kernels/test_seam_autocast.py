"""Every fused path under ``torch.autocast`` against the reference path under the same
autocast (issue 13, item 9: ``--amp bf16/fp16`` crashed in the fused backward on CPU).

CPU bfloat16 and float16 always; CUDA float16/bfloat16 (fused and Triton) when a CUDA
device is present. The Triton path on CPU runs under the interpreter in
``triton_cases.py`` (a subprocess, see test_triton.py).

The fused functions switch autocast off inside and compute the small tensors in
float32, so under autocast they also equal their own float32 result; the reference path
runs its linear/conv layers in the autocast dtype, so the two agree to that dtype's
precision.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from excite.layers import CBAM, ChannelAttention, SpatialAttention, SqueezeExcite

C = 8
SPATIAL = {1: (9,), 2: (5, 6), 3: (3, 4, 5)}
# output error norm relative to the reference's norm, per autocast dtype
TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3}

BUILDERS = {
    "se": lambda d: SqueezeExcite(C, reduction=4),
    "cam": lambda d: ChannelAttention(C, reduction=4),
    "sam": lambda d: SpatialAttention(C, spatial_dims=d, kernel_size=3),
    "sam_bn_eval": lambda d: SpatialAttention(C, spatial_dims=d, kernel_size=3, norm=True).eval(),
    "cbam": lambda d: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3),
    "cbam_official_eval": lambda d: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3, variant="official").eval(),
    "cbam_spatial_channel": lambda d: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3, arrangement="spatial-channel"),
}

DEVICES = [("cpu", torch.bfloat16), ("cpu", torch.float16), ("cuda", torch.float16), ("cuda", torch.bfloat16)]
NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _impls(device: str) -> list[str]:
    if device == "cuda":
        from excite.kernels import triton_available

        return ["fused", "triton"] if triton_available() else ["fused"]
    return ["fused"]


def _set_impl(m: nn.Module, impl: str) -> None:
    for mod in m.modules():
        if hasattr(mod, "impl"):
            mod.impl = impl


def _randomise(m: nn.Module) -> nn.Module:
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return m


def _step(m, x, dy, impl, autocast_dtype):
    _set_impl(m, impl)
    xr = x.detach().clone().requires_grad_()
    m.zero_grad(set_to_none=True)
    ctx = torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with ctx:  # backward inside the context too, as the reproduction does
        y = m(xr)
        (y.float() * dy).sum().backward()
    return y.detach(), [xr.grad] + [p.grad for p in m.parameters()]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return (torch.linalg.vector_norm(a - b) / (torch.linalg.vector_norm(b) + 1e-12)).item()


# every module at 1D/2D/3D in CPU bfloat16 and on CUDA; CPU float16 at 2D
CASES = [
    pytest.param(
        name, d, device, dtype, id=f"{name}-{d}d-{device}-{str(dtype)[6:]}",
        marks=[NO_CUDA] if device == "cuda" else [],
    )
    for name in sorted(BUILDERS)
    for d in (1, 2, 3)
    for device, dtype in DEVICES
    if not (device == "cpu" and dtype == torch.float16 and d != 2)
]


@pytest.mark.parametrize("name, d, device, dtype", CASES)
def test_fused_under_autocast_matches_reference(name: str, d: int, device: str, dtype) -> None:
    torch.manual_seed(0)
    m = _randomise(BUILDERS[name](d)).to(device)
    x = torch.randn(2, C, *SPATIAL[d], device=device)
    dy = torch.randn_like(x)
    ref, ref_grads = _step(m, x, dy, "reference", dtype)
    exact, exact_grads = _step(m, x, dy, "fused", None)  # float32, no autocast
    ref32, ref32_grads = _step(m, x, dy, "reference", None)
    torch.testing.assert_close(exact, ref32, rtol=1e-5, atol=1e-6)
    for a, b in zip(exact_grads, ref32_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for impl in _impls(device):
        out, grads = _step(m, x, dy, impl, dtype)
        assert out.dtype == ref.dtype and out.shape == x.shape
        assert _rel(out, ref) <= TOL[dtype], impl
        for a, b, t in zip(grads, ref_grads, ref32_grads):
            assert a.dtype == b.dtype and a.shape == b.shape
            # against the float32 truth, the fused gradient is at least as close as the
            # reference path's own autocast gradient (a 1-element BatchNorm gradient of
            # the reference is off by up to ~8e-2 in bfloat16)
            assert _rel(a, t) <= max(_rel(b, t), 1e-4), impl
        # autocast is off inside the fused functions: the float32 result, unchanged
        torch.testing.assert_close(out, exact, rtol=1e-5, atol=1e-6)
        for a, b in zip(grads, exact_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["se", "sam", "cbam", "cbam_official_eval"])
def test_half_input_into_float32_module_under_autocast(name: str) -> None:
    """A bf16 activation (the previous autocast layer's output) entering float32
    attention weights: allowed under autocast, output in bf16 on both paths."""
    m = _randomise(BUILDERS[name](2))
    x = torch.randn(2, C, 5, 6).bfloat16()
    dy = torch.randn(x.shape)
    ref, ref_grads = _step(m, x, dy, "reference", torch.bfloat16)
    out, grads = _step(m, x, dy, "fused", torch.bfloat16)
    _, truth = _step(copy.deepcopy(m).double(), x.double(), dy.double(), "reference", None)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert _rel(out, ref) <= TOL[torch.bfloat16]
    for a, b, t in zip(grads, ref_grads, truth):
        assert a.dtype == b.dtype
        assert _rel(a, t) <= max(_rel(b, t), 1e-2)
