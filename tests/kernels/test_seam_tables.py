"""The seam's single sources: one activation table, one float32-accumulating mean, one
"are we traced/compiled/observed?" predicate.

The activation rows are checked against torch.nn itself (the module class's output and
autograd's derivative of it, in float64), not against the table's own functions.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from excite import kernels
from excite.kernels import ACTIVATIONS, activation_name, execution_mode
from excite.kernels.activations import act_backward, act_forward
from excite.kernels.ops import stable_mean
from excite.layers import rank
from excite.layers._common import resolve_activation


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_row_is_torch_nn(name: str) -> None:
    row = ACTIVATIONS[name]
    module = resolve_activation(name, name="activation")  # what the layers build
    assert type(module) is row.module
    assert activation_name(module) == name  # what the fused paths read back
    h = torch.linspace(-4, 4, 101, dtype=torch.float64).requires_grad_()
    z = module(h)
    (grad,) = torch.autograd.grad(z, h, torch.ones_like(z))
    torch.testing.assert_close(act_forward(name, h.detach()), z.detach())
    ours = act_backward(name, torch.ones_like(h), h.detach(), z.detach())
    kinks = torch.isin(h.detach(), torch.tensor([-3.0, 0.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(ours[~kinks], grad[~kinks])  # away from relu/hardsigmoid kinks
    if row.from_output:  # the derivative needs only z: h may be dropped for backward
        other = act_backward(name, torch.ones_like(h), torch.zeros_like(h), z.detach())
        torch.testing.assert_close(other, ours)


def test_activation_name_exact_types_only() -> None:
    class MyReLU(nn.ReLU):
        pass

    assert activation_name(MyReLU()) is None  # a subclass may change forward
    assert activation_name(nn.GELU(approximate="tanh")) is None  # not the exact form
    assert activation_name(nn.LeakyReLU()) is None
    assert kernels.ACTIVATIONS is ACTIVATIONS


def test_one_mean() -> None:
    assert rank.stable_mean is stable_mean
    x = torch.full((1, 3, 64, 64), 1000.0, dtype=torch.float16)  # sum 4.1e6 > fp16 max
    assert torch.equal(stable_mean(x, (2, 3)), torch.full((1, 3), 1000.0, dtype=torch.float16))


def test_execution_mode() -> None:
    x = torch.randn(2, 3)
    assert execution_mode(x) == "eager"
    assert execution_mode(torch.empty(2, 3, device="meta")) == "observed"
    with FlopCounterMode(display=False):
        assert execution_mode(x) == "observed"
    seen = []

    def f(t):
        seen.append(execution_mode(t))
        return t * 2

    torch.compile(f, fullgraph=True, backend="eager")(x)
    assert seen[-1] == "compiling"

    class M(nn.Module):
        def forward(self, t):
            seen.append(execution_mode(t))
            return t * 2

    torch.export.export(M(), (x,))
    assert seen[-1] == "tracing"
    torch.jit.trace(M(), (x,), check_trace=False)  # (the check re-runs it eagerly)
    assert seen[-1] == "tracing"


def _native() -> bool:
    from excite.kernels import native

    return native.available()


def test_resolve_impl_and_conv_same_read_the_predicate(monkeypatch) -> None:
    """Both decisions change with the one predicate (patched to each mode in turn)."""
    from excite.kernels import _dispatch, ops

    x = torch.randn(2, 8, 3, 4, 5, requires_grad=True)
    w = torch.randn(1, 2, 3, 3, 3)
    frames = []
    real = ops._conv3d_by_frames
    monkeypatch.setattr(ops, "_conv3d_by_frames", lambda *a: frames.append(1) or real(*a))
    native = "native" if _native() else "fused"  # a spatial block that needs a gradient
    for mode, impl, by_frames in [("eager", native, 1), ("compiling", "fused", 0),
                                  ("tracing", "reference", 0), ("observed", "reference", 0)]:
        monkeypatch.setattr(_dispatch, "execution_mode", lambda t, m=mode: m)
        monkeypatch.setattr(ops, "execution_mode", lambda t, m=mode: m)
        assert kernels.resolve_impl("auto", x) == impl, mode
        frames.clear()
        ops.conv_same(x[:, :2].detach(), w)
        assert len(frames) == by_frames, mode
