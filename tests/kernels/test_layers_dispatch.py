"""The modules' ``impl`` switch: fused == reference for every module, rank and variant,
same state dict, the global default, the fallbacks, and MAC counts unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from excite import kernels
from excite.kernels import fused
from excite.layers import CBAM, ChannelAttention, SpatialAttention, SqueezeExcite

C = 8
SPATIAL = {1: (9,), 2: (5, 6), 3: (3, 4, 5)}

BUILDERS = {
    "se": lambda d, **kw: SqueezeExcite(C, reduction=4, **kw),
    "se_silu_hsig": lambda d, **kw: SqueezeExcite(C, reduction=4, activation="silu", gate="hard_sigmoid", **kw),
    "cam": lambda d, **kw: ChannelAttention(C, reduction=4, **kw),
    "cam_max_bias": lambda d, **kw: ChannelAttention(C, reduction=4, pools="max", bias=True, **kw),
    "sam": lambda d, **kw: SpatialAttention(C, spatial_dims=d, kernel_size=3, **kw),
    "sam_bn_eval": lambda d, **kw: SpatialAttention(C, spatial_dims=d, kernel_size=3, norm=True, pools=("max", "avg"), **kw),
    "cbam": lambda d, **kw: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3, **kw),
    "cbam_official_eval": lambda d, **kw: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3, variant="official", **kw),
    "cbam_spatial_channel": lambda d, **kw: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3, arrangement="spatial-channel", **kw),
}


def _randomise(m: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine, so the frozen-norm path is exercised."""
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
            mod.eval()
    return m


def _set_impl(m: nn.Module, impl: str) -> None:
    for mod in m.modules():
        if hasattr(mod, "impl"):
            mod.impl = impl


def _run(m, x, dy):
    out = m(x)
    params = [p for p in m.parameters()]
    grads = torch.autograd.grad(out, [x, *params], dy)
    return out, grads


def _assert_fused_matches_reference(m: nn.Module, x: torch.Tensor) -> None:
    """Output and gradients (input and every parameter) of impl="fused" equal "reference"."""
    dy = torch.randn_like(x)
    _set_impl(m, "reference")
    ref, ref_grads = _run(m, x, dy)
    _set_impl(m, "fused")
    out, grads = _run(m, x, dy)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_fused_equals_reference(name, d):
    m = _randomise(BUILDERS[name](d))
    x = torch.randn(2, C, *SPATIAL[d], requires_grad=True)
    _assert_fused_matches_reference(m, x)


def test_fused_runs_by_default(monkeypatch):
    # without the native CPU kernels (no compiler or EXCITE_NATIVE=0): the fused path
    from excite.kernels import _dispatch

    monkeypatch.setattr(_dispatch, "_native_available", lambda: False)
    calls = []
    real = fused.CBAMFunction.apply
    monkeypatch.setattr(fused.CBAMFunction, "apply", lambda *a: calls.append(1) or real(*a))
    m = CBAM(C, spatial_dims=2, reduction=4)
    x = torch.randn(2, C, 5, 6)
    m(x)
    assert calls == [1]
    with kernels.use_impl("reference"):
        m(x)
    assert calls == [1]
    CBAM(C, spatial_dims=2, reduction=4, impl="reference")(x)
    assert calls == [1]
    CBAM(C, spatial_dims=2, reduction=4, impl="fused")(x)
    assert calls == [1, 1]


def test_training_batchnorm_falls_back_to_reference():
    m = CBAM(C, spatial_dims=2, reduction=4, variant="official")  # BatchNorm in training mode
    x = torch.randn(2, C, 5, 6)
    m_ref = CBAM(C, spatial_dims=2, reduction=4, variant="official", impl="reference")
    m_ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(m(x), m_ref(x))  # auto -> reference, running stats updated alike
    torch.testing.assert_close(m.spatial.norm.running_mean, m_ref.spatial.norm.running_mean)
    m.impl = "fused"
    with pytest.raises(ValueError, match="impl='fused' is not available"):
        m(x)


def test_custom_activation_class_falls_back():
    class Swish(nn.Module):
        def forward(self, t):
            return t * torch.sigmoid(t)

    m = SqueezeExcite(C, reduction=4, activation=Swish)
    x = torch.randn(2, C, 5)
    ref = x * torch.sigmoid(m.fc2(Swish()(m.fc1(x.mean(2))))).unsqueeze(-1)
    torch.testing.assert_close(m(x), ref)


def test_state_dict_unchanged_by_impl():
    a = CBAM(C, spatial_dims=3, reduction=4, variant="official", impl="fused")
    b = CBAM(C, spatial_dims=3, reduction=4, variant="official")
    assert list(a.state_dict()) == list(b.state_dict())
    assert not any("impl" in k for k in a.state_dict())
    with pytest.raises(ValueError, match="impl must be one of"):
        SqueezeExcite(C, impl="fast")


@pytest.mark.parametrize("d", [2, 3])
def test_channels_last_module(d):
    fmt = torch.channels_last if d == 2 else torch.channels_last_3d
    m = CBAM(C, spatial_dims=d, reduction=4, kernel_size=3)
    x = torch.randn(2, C, *SPATIAL[d]).contiguous(memory_format=fmt).requires_grad_()
    _assert_fused_matches_reference(m, x)


@pytest.mark.parametrize("name,d", [("cbam", 3), ("cbam_official_eval", 2), ("se", 2), ("cam", 3)])
def test_flop_counter_sees_the_same_macs(name, d):
    """The forward's MACs (what excite.profile reports) are the same on both paths.

    (A forward+backward count differs: the fused backward's batched dot products are
    bmm calls and its MLP weight gradient sums the descriptors before the matmul.)
    """
    m = _randomise(BUILDERS[name](d))
    x = torch.randn(2, C, *SPATIAL[d], requires_grad=True)
    counts = {}
    for impl in ("reference", "fused"):
        _set_impl(m, impl)
        with FlopCounterMode(display=False) as fc:
            m(x)
        counts[impl] = fc.get_total_flops()
    assert counts["fused"] == counts["reference"] > 0


@pytest.mark.parametrize("name", ["sam", "cbam"])
def test_channels_last_weights_3d(name):
    """A module moved to channels_last_3d (its conv weight too) gives the same result."""
    m = BUILDERS[name](3)
    _set_impl(m, "fused")
    x = torch.randn(3, C, 3, 4, 5, requires_grad=True)
    dy = torch.randn_like(x)
    ref, rg = _run(m, x, dy)
    m.to(memory_format=torch.channels_last_3d)
    out, g = _run(m, x, dy)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g, rg):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
