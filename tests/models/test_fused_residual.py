"""The end of a residual block, relu(attention(out) + identity), as one pass of the
attention's native kernel at inference: the same values as the unfused block, and the
unfused block wherever something needs to see the module called or a gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from excite import create_model
from excite.kernels import native
from excite.layers import CBAM, SqueezeExcite, fused_residual_relu

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native kernels {native.status()}")

ATTENTIONS = {
    "se": {"attention": "se"},
    "cam": {"attention": "cam"},
    "sam": {"attention": "sam"},
    "cbam": {"attention": "cbam"},
    "cbam_official": {"attention": "cbam", "attention_kwargs": {"variant": "official"}},
}
FORMATS = {2: torch.channels_last, 3: torch.channels_last_3d}


def _set_impl(model: nn.Module, impl: str) -> None:
    for m in model.modules():
        if hasattr(m, "impl"):
            m.impl = impl


@pytest.fixture
def fused_calls(monkeypatch):
    """How many residual blocks ended in the native pass (calls with a residual)."""
    calls = []
    real = native.load().block_forward

    def counting(*args):
        calls.append(args[-1] is not None)
        return real(*args)

    monkeypatch.setattr(native.load(), "block_forward", counting, raising=False)
    return calls


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
@pytest.mark.parametrize("d", [1, 2, 3])
def test_fused_block_end_equals_the_unfused_block(name, d, fused_calls) -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=5, in_channels=2, spatial_dims=d, **ATTENTIONS[name])
    model = model.double().eval()
    with torch.no_grad():  # trained-looking BatchNorms (the official CBAM's starts at gamma = 0)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 2, *([20, 18, 16][:d]), dtype=torch.float64)
    if d > 1:
        x = x.contiguous(memory_format=FORMATS[d])
    with torch.inference_mode():
        _set_impl(model, "reference")
        want = model(x)
        _set_impl(model, "native")
        fused_calls.clear()
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert fused_calls.count(True) == 8  # every residual block of resnet18 ended fused


def test_hooks_and_gradients_keep_the_unfused_block(fused_calls) -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", attention="cbam", num_classes=5, in_channels=1).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        plain = model(x)
    assert fused_calls.count(True) == 8
    # a forward hook on one attention module: that block calls the module; the others fuse
    seen = []
    handle = model.layer2[0].attention.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    fused_calls.clear()
    with torch.no_grad():
        hooked = model(x)
    handle.remove()
    assert seen == [(1, 128, 4, 4)] and fused_calls.count(True) == 7
    torch.testing.assert_close(hooked, plain)
    # a global forward hook: no block fuses
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: None)
    fused_calls.clear()
    try:
        with torch.no_grad():
            torch.testing.assert_close(model(x), plain)
    finally:
        handle.remove()
    assert fused_calls.count(True) == 0
    # training: gradients need the autograd path
    fused_calls.clear()
    model(x.requires_grad_(True)).sum().backward()
    assert fused_calls.count(True) == 0 and x.grad is not None


def test_the_helper_declines_what_it_cannot_fuse() -> None:
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        assert fused_residual_relu(nn.Identity(), x, x.clone()) is None  # no attention
        se = SqueezeExcite(16, reduction=4)
        other = torch.randn(2, 16, 6, 7).contiguous(memory_format=torch.channels_last)
        assert fused_residual_relu(se, x, other) is None  # identity laid out otherwise
        assert fused_residual_relu(CBAM(16, arrangement="parallel"), x, x.clone()) is None
        assert fused_residual_relu(SqueezeExcite(16, impl="reference"), x, x.clone()) is None
        identity = torch.randn(2, 16, 6, 7)
        got = fused_residual_relu(se, x, identity)
        torch.testing.assert_close(got, torch.relu(se(x) + identity))
