"""Triton kernel cases, run by test_triton.py in a fresh interpreter process.

(TRITON_INTERPRET must be set before triton is first imported, and other tests in a
worker - torch.compile - may import triton first, so these run in their own process.)
Compared against the equations written out in test_fused.py.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must be set before triton is imported
pytest.importorskip("triton")

from excite import kernels  # noqa: E402

from test_fused import SHAPES, _equation, _grads, _params, _run  # noqa: E402

CASES = [
    ("se", ("avg",), None, 2),
    ("cam", ("avg", "max"), None, 1),
    ("sam", None, ("max", "avg"), 2),  # with the frozen-BatchNorm affine
    ("cbam", ("avg", "max"), ("avg", "max"), 1),
    ("cbam", ("avg", "max"), ("avg", "max"), 2),
    ("cbam", ("avg", "max"), ("max", "avg"), 3),
]


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("kind,cpools,spools,d", CASES)
def test_triton_matches_equations(kind, cpools, spools, d):
    affine = spools == ("max", "avg")
    x = torch.randn(SHAPES[d], device=_device(), requires_grad=True)
    p = {k: v.detach().to(_device()).requires_grad_() for k, v in _params(8, d, torch.float32).items()}
    out, ins = _run(kind, cpools, spools, x, p, "triton", affine)
    ref = _equation(kind, cpools, spools, x, p, affine)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(out)
    for a, b in zip(_grads(out, ins, dy), _grads(ref, ins, dy)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_triton_channels_last_bf16():
    x = torch.randn(2, 8, 5, 6, device=_device()).to(torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    p = {k: v.detach().to(_device()).requires_grad_() for k, v in _params(8, 2, torch.float32).items()}
    cp = sp = ("avg", "max")
    out, ins = _run("cbam", cp, sp, x, p, "triton")
    assert out.dtype == torch.bfloat16
    fused, fins = _run("cbam", cp, sp, x, p, "fused")
    torch.testing.assert_close(out.float(), fused.float(), rtol=1e-2, atol=1e-2)
    dy = torch.randn_like(out)
    for a, b in zip(_grads(out, ins, dy), _grads(fused, fins, dy)):
        a, b = a.double(), b.double()
        assert torch.linalg.vector_norm(a - b) <= 1e-2 * torch.linalg.vector_norm(b)


def test_triton_needs_cuda_or_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if torch.cuda.is_available():
        pytest.skip("CUDA present: triton runs on CUDA tensors")
    x = torch.randn(2, 8, 5)
    with pytest.raises(ValueError, match="impl='triton' needs a CUDA tensor"):
        kernels.resolve_impl("triton", x)
    assert kernels.resolve_impl("auto", x) != "triton"  # never triton on CPU


AUTOCAST = [torch.bfloat16] + ([torch.float16] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("dtype", AUTOCAST, ids=str)
@pytest.mark.parametrize("kind,cpools,spools,d", [
    ("se", ("avg",), None, 1),
    ("sam", None, ("max", "avg"), 2),  # with the frozen-BatchNorm affine
    ("cbam", ("avg", "max"), ("avg", "max"), 3),
])
def test_triton_under_autocast(kind, cpools, spools, d, dtype):
    """Autocast is off inside the Triton function: under autocast it gives its float32
    result (which equals the equations), and agrees with the reference path under the
    same autocast to that dtype's precision."""
    affine = spools == ("max", "avg")
    dev = _device()
    x = torch.randn(SHAPES[d], device=dev, requires_grad=True)
    p = {k: v.detach().to(dev).requires_grad_() for k, v in _params(8, d, torch.float32).items()}
    dy = torch.randn(SHAPES[d], device=dev)
    exact, ins = _run(kind, cpools, spools, x, p, "triton", affine)
    exact_grads = _grads(exact, ins, dy)
    with torch.autocast(dev, dtype=dtype):
        out, ins = _run(kind, cpools, spools, x, p, "triton", affine)
        grads = _grads(out, ins, dy)
        ref, _ = _run(kind, cpools, spools, x, p, "reference", affine)
    assert out.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(out, exact, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, exact_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    err = torch.linalg.vector_norm(out.double() - ref.double()) / torch.linalg.vector_norm(ref.double())
    assert err <= 2e-2


@pytest.mark.parametrize("kind,cpools,spools,d", [
    ("se", ("avg",), None, 2),
    ("sam", None, ("avg", "max"), 2),
    ("cbam", ("avg", "max"), ("max", "avg"), 3),
])
def test_triton_empty_batch(kind, cpools, spools, d):
    """N = 0: an empty output of x's shape, empty dx and zero weight gradients."""
    dev = _device()
    x = torch.randn(0, *SHAPES[d][1:], device=dev, requires_grad=True)
    p = {k: v.detach().to(dev).requires_grad_() for k, v in _params(8, d, torch.float32).items()}
    out, ins = _run(kind, cpools, spools, x, p, "triton")
    assert out.shape == x.shape
    grads = _grads(out, ins, torch.ones_like(out))
    assert grads[0].shape == x.shape
    for g, t in zip(grads[1:], [t for t in ins[1:] if t is not None]):
        assert torch.equal(g, torch.zeros_like(t))
