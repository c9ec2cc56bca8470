"""One input rule for every module (issue 13, items 11 and 12), from the one input check.

- N = 0: an empty output of the input's shape, forward and backward, on every path;
- a zero-size channel or spatial dim: ``ValueError`` naming the shape;
- integer, bool and complex inputs: ``TypeError`` naming the dtype;
- float64: works after ``module.double()`` for every module; an input whose dtype
  differs from the module's parameters raises ``TypeError`` naming both dtypes, as
  ``nn.Linear`` / ``nn.Conv`` refuse the mix (checked below), except under autocast.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from excite import kernels
from excite.layers import (
    CBAM,
    ECA,
    SCSE,
    ChannelAttention,
    SpatialAttention,
    SpatialSqueezeExcite,
    SqueezeExcite,
    create_attention,
)

C = 8
SPATIAL = {1: (7,), 2: (4, 5), 3: (2, 3, 4)}

BUILDERS = {
    "SqueezeExcite": lambda d: SqueezeExcite(C, reduction=4),
    "ChannelAttention": lambda d: ChannelAttention(C, reduction=4),
    "SpatialAttention": lambda d: SpatialAttention(C, spatial_dims=d, kernel_size=3),
    "SpatialAttention-any-C": lambda d: SpatialAttention(spatial_dims=d, kernel_size=3, norm=True),
    "CBAM": lambda d: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3),
    "CBAM-official": lambda d: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3, variant="official"),
    "CBAM-spatial-channel": lambda d: CBAM(
        C, spatial_dims=d, reduction=4, kernel_size=3, arrangement="spatial-channel"
    ),
    "CBAM-parallel": lambda d: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3, arrangement="parallel"),
    "ECA": lambda d: ECA(C, kernel_size=3),
    "ECA-any-C": lambda d: ECA(kernel_size=3),
    "CircularECA": lambda d: create_attention("ceca", C, kernel_size=3),
    "SCSE": lambda d: SCSE(C, spatial_dims=d, reduction=4),
    "SpatialSqueezeExcite": lambda d: SpatialSqueezeExcite(C, spatial_dims=d),
}
FUSED = {"SqueezeExcite", "ChannelAttention", "SpatialAttention", "SpatialAttention-any-C",
         "CBAM", "CBAM-official", "CBAM-spatial-channel", "SCSE"}


def _set_impl(m: nn.Module, impl: str) -> None:
    for mod in m.modules():
        if hasattr(mod, "impl"):
            mod.impl = impl


def _impls(name: str) -> list[str]:
    return ["reference", "fused"] if name in FUSED else ["reference"]


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_empty_batch(name: str, d: int) -> None:
    m = BUILDERS[name](d)
    has_norm = any(isinstance(t, nn.modules.batchnorm._BatchNorm) for t in m.modules())
    for train in (True, False):
        m.train(train)  # a training-mode BatchNorm has no fused form; in eval it has
        for impl in _impls(name):
            if impl == "fused" and train and has_norm:
                continue
            _set_impl(m, impl)
            x = torch.randn(0, C, *SPATIAL[d], requires_grad=True)
            y = m(x)
            assert y.shape == x.shape and y.dtype == x.dtype, impl
            assert m.gate(x).shape[0] == 0
            m.zero_grad(set_to_none=True)
            y.sum().backward()
            assert x.grad is not None and x.grad.shape == x.shape
            for pname, p in m.named_parameters():
                assert p.grad is None or not p.grad.any(), (impl, pname)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_zero_size_channel_or_spatial_dim(name: str, d: int) -> None:
    m = BUILDERS[name](d)
    for axis in range(2, 2 + d):
        shape = [2, C, *SPATIAL[d]]
        shape[axis] = 0
        x = torch.randn(shape)
        for method in (m, m.gate):
            with pytest.raises(ValueError, match=rf"input x.*non-empty.*{re.escape(str(tuple(shape)))}"):
                method(x)
    if name.endswith("any-C"):  # no channel count to compare against: C = 0 is caught too
        with pytest.raises(ValueError, match=r"non-empty channel.*\(2, 0,"):
            m(torch.randn(2, 0, *SPATIAL[d]))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_non_floating_input(name: str, dtype: torch.dtype) -> None:
    m = BUILDERS[name](2)
    x = torch.ones(2, C, *SPATIAL[2], dtype=dtype)
    for method in (m, m.gate):
        with pytest.raises(TypeError, match=rf"input x must be a floating-point.*{re.escape(str(dtype))}"):
            method(x)


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_float64_after_double(name: str, d: int) -> None:
    m = BUILDERS[name](d).double().eval()
    for impl in _impls(name):
        _set_impl(m, impl)
        x = torch.randn(2, C, *SPATIAL[d], dtype=torch.float64, requires_grad=True)
        y = m(x)
        assert y.dtype == torch.float64
        y.sum().backward()
        assert x.grad.dtype == torch.float64


def test_pytorch_refuses_the_mix_too() -> None:
    """The rule's premise: nn.Linear and nn.Conv raise for a float64 input into float32
    weights (and for bfloat16 outside autocast)."""
    for layer, x in ((nn.Linear(C, 2), torch.randn(2, C)), (nn.Conv2d(C, 1, 3), torch.randn(1, C, 5, 5))):
        for dtype in (torch.float64, torch.bfloat16):
            with pytest.raises(RuntimeError):
                layer(x.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_mixed_dtypes_name_both(name: str, dtype: torch.dtype) -> None:
    m = BUILDERS[name](2)  # float32 parameters
    x = torch.randn(2, C, *SPATIAL[2]).to(dtype)
    for method in (m, m.gate):
        with pytest.raises(TypeError, match=rf"torch.float32 parameters.*input x is {re.escape(str(dtype))}"):
            method(x)
    if dtype != torch.float64:
        with torch.autocast("cpu", dtype=dtype):  # autocast decides the compute dtype
            assert m(x).shape == x.shape


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_kernel_functions_follow_the_rule(impl: str) -> None:
    w1, w2, w = torch.randn(2, C), torch.randn(C, 2), torch.randn(1, 2, 3, 3)
    empty = torch.randn(0, C, 4, 5, requires_grad=True)
    for fn in (
        lambda t: kernels.squeeze_excite(t, w1, None, w2, None, impl=impl),
        lambda t: kernels.channel_attention(t, w1, None, w2, None, impl=impl),
        lambda t: kernels.spatial_attention(t, w, impl=impl),
        lambda t: kernels.cbam(t, w1, None, w2, None, w, impl=impl),
    ):
        out = fn(empty)
        assert out.shape == empty.shape
        (g,) = torch.autograd.grad(out.sum(), empty)
        assert g.shape == empty.shape
        with pytest.raises(TypeError, match=r"x must be a floating-point.*torch.int64"):
            fn(torch.ones(2, C, 4, 5, dtype=torch.int64))
        with pytest.raises(ValueError, match=r"x must have non-empty.*\(2, 8, 0, 5\)"):
            fn(torch.randn(2, C, 0, 5))
