"""The fused autograd functions against the papers' equations written out here.

The references below are SE (Hu et al. 2018, eq. 2-4) and CBAM (Woo et al. 2018,
eq. 1-3) in plain autograd ops (``amax``, ``cat``, ``conv{d}d``), independent of
excite.kernels' own reference module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from excite import kernels
from excite.kernels import fused

ACT = {
    "relu": torch.relu,
    "silu": F.silu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": F.hardsigmoid,
    "identity": lambda t: t,
}
SHAPES = {1: (2, 8, 11), 2: (2, 8, 5, 6), 3: (2, 8, 3, 4, 5)}


def eq_channel(x, w1, b1, w2, b2, pools, act="relu", gate="sigmoid"):
    axes = tuple(range(2, x.ndim))
    desc = {"avg": x.mean(axes), "max": x.amax(axes)}
    logits = sum(F.linear(ACT[act](F.linear(desc[p], w1, b1)), w2, b2) for p in pools)
    return x * ACT[gate](logits).view(*x.shape[:2], *([1] * (x.ndim - 2)))


def eq_spatial(x, w, pools, gate="sigmoid", scale=None, shift=None):
    maps = {"avg": x.mean(1, keepdim=True), "max": x.amax(1, keepdim=True)}
    conv = (F.conv1d, F.conv2d, F.conv3d)[x.ndim - 3]
    pre = conv(torch.cat([maps[p] for p in pools], 1), w, padding=[k // 2 for k in w.shape[2:]])
    if scale is not None:
        pre = pre * scale + shift
    return x * ACT[gate](pre)


def eq_cbam(x, w1, b1, w2, b2, w, cpools, spools, act="relu", gate="sigmoid", scale=None, shift=None):
    return eq_spatial(eq_channel(x, w1, b1, w2, b2, cpools, act, gate), w, spools, gate, scale, shift)


def _params(c, d, dtype, *, bias=True, pools=2, k=3):
    hid = max(c // 4, 1)
    t = lambda *s: (torch.randn(*s, dtype=torch.float64) * 0.5).to(dtype).requires_grad_()
    return {
        "w1": t(hid, c),
        "b1": t(hid) if bias else None,
        "w2": t(c, hid),
        "b2": t(c) if bias else None,
        "w": t(1, pools, *([k] * d)),
        "scale": t(1),
        "shift": t(1),
    }


def _grads(out, inputs, dy):
    present = [t for t in inputs if t is not None]
    return torch.autograd.grad(out, present, dy)


def _close(a, b, dtype):
    """float32: elementwise rel 1e-5; bf16: error norm <= 1e-2 of the reference's norm
    (bf16 keeps ~3 significant digits, so single elements of a bf16 result differ more)."""
    if dtype == torch.bfloat16:
        a, b = a.double(), b.double()
        assert torch.linalg.vector_norm(a - b) <= 1e-2 * torch.linalg.vector_norm(b) + 1e-6
    else:
        b = b.double()
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * max(1.0, b.abs().max().item()))


CASES = [
    ("se", ("avg",), None),
    ("cam", ("avg", "max"), None),
    ("cam", ("max",), None),
    ("sam", None, ("avg", "max")),
    ("sam", None, ("max", "avg")),
    ("cbam", ("avg", "max"), ("avg", "max")),  # paper
    ("cbam", ("avg", "max"), ("max", "avg")),  # official order (with affine below)
]


def _run(kind, cpools, spools, x, p, impl, affine=False, act="relu", gate="sigmoid"):
    sc, sh = (p["scale"], p["shift"]) if affine else (None, None)
    if kind == "se":
        out = kernels.squeeze_excite(x, p["w1"], p["b1"], p["w2"], p["b2"], activation=act, gate=gate, impl=impl)
        ins = [x, p["w1"], p["b1"], p["w2"], p["b2"]]
    elif kind == "cam":
        out = kernels.channel_attention(
            x, p["w1"], p["b1"], p["w2"], p["b2"], pools=cpools, activation=act, gate=gate, impl=impl
        )
        ins = [x, p["w1"], p["b1"], p["w2"], p["b2"]]
    elif kind == "sam":
        out = kernels.spatial_attention(x, p["w"], pools=spools, gate=gate, scale=sc, shift=sh, impl=impl)
        ins = [x, p["w"], sc, sh]
    else:
        out = kernels.cbam(
            x, p["w1"], p["b1"], p["w2"], p["b2"], p["w"], channel_pools=cpools, spatial_pools=spools,
            activation=act, gate=gate, scale=sc, shift=sh, impl=impl,
        )
        ins = [x, p["w1"], p["b1"], p["w2"], p["b2"], p["w"], sc, sh]
    return out, ins


def _equation(kind, cpools, spools, x, p, affine=False, act="relu", gate="sigmoid"):
    sc, sh = (p["scale"], p["shift"]) if affine else (None, None)
    if kind in ("se", "cam"):
        return eq_channel(x, p["w1"], p["b1"], p["w2"], p["b2"], cpools, act, gate)
    if kind == "sam":
        return eq_spatial(x, p["w"], spools, gate, sc, sh)
    return eq_cbam(x, p["w1"], p["b1"], p["w2"], p["b2"], p["w"], cpools, spools, act, gate, sc, sh)


def _rel(a, b):
    a, b = a.double(), b.double()
    return (torch.linalg.vector_norm(a - b) / (torch.linalg.vector_norm(b) + 1e-12)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("kind,cpools,spools", CASES)
def test_fused_matches_equations(kind, cpools, spools, d, dtype):
    affine = spools == ("max", "avg")
    # distinct values within each sample, exact in bf16 (k / 256 with |k| < 128): no ties
    # in the max pools, where any split of the gradient between maximisers is valid
    shape = (2, 8, 2, 3, 5) if d == 3 else SHAPES[d]
    per = torch.Size(shape[1:]).numel()
    assert per <= 256
    x = torch.stack([torch.randperm(per, dtype=torch.float64) - per // 2 for _ in range(shape[0])])
    x = (x / 256).view(shape)
    x = x.to(dtype).requires_grad_()
    p = _params(8, d, dtype, bias=kind != "cbam" or affine, pools=len(spools or ()) or 2)
    out, ins = _run(kind, cpools, spools, x, p, "fused", affine)
    assert out.dtype == dtype and out.shape == x.shape
    dy = torch.randn_like(out)
    grads = _grads(out, ins, dy)
    if dtype == torch.float32:
        ref = _equation(kind, cpools, spools, x, p, affine)
        _close(out, ref, dtype)
        for a, b in zip(grads, _grads(ref, ins, dy)):
            _close(a, b, dtype)
        return
    # bf16: against the equations in float64 on the same rounded inputs (the truth).
    p64 = {k: None if v is None else v.detach().double().requires_grad_() for k, v in p.items()}
    x64 = x.detach().double().requires_grad_()
    ins64 = [x64] + [p64[k] for k in _names(kind, affine)]
    truth = _equation(kind, cpools, spools, x64, p64, affine)
    true_grads = _grads(truth, ins64, dy.double())
    assert _rel(out, truth) <= 1e-2
    assert _rel(grads[0], true_grads[0]) <= 1e-2
    # weight gradients sum over every position, so bf16 rounding piles up in them for
    # the textbook path too: require the fused error to be within 2x the equations' own
    # bf16 error (or 1e-2).
    eq_bf16 = _equation(kind, cpools, spools, x, p, affine)
    for a, b, t in zip(grads[1:], _grads(eq_bf16, ins, dy)[1:], true_grads[1:]):
        assert _rel(a, t) <= max(1e-2, 2 * _rel(b, t))


def _names(kind, affine):
    mlp = ["w1", "b1", "w2", "b2"]
    conv = ["w"] + (["scale", "shift"] if affine else [])
    names = {"se": mlp, "cam": mlp, "sam": conv, "cbam": mlp + conv}[kind]
    return names


@pytest.mark.parametrize("act,gate", [("silu", "hard_sigmoid"), ("gelu", "sigmoid"), ("tanh", "sigmoid"), ("identity", "tanh")])
def test_activations_and_gates(act, gate):
    x = torch.randn(SHAPES[2], dtype=torch.float64, requires_grad=True)
    p = _params(8, 2, torch.float64)
    for kind, cp, sp in [("cam", ("avg", "max"), None), ("cbam", ("avg", "max"), ("avg", "max"))]:
        out, ins = _run(kind, cp, sp, x, p, "fused", act=act, gate=gate)
        ref = _equation(kind, cp, sp, x, p, act=act, gate=gate)
        torch.testing.assert_close(out, ref)
        dy = torch.randn_like(out)
        for a, b in zip(_grads(out, ins, dy), _grads(ref, ins, dy)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_gradcheck_float64(d):
    shape = {1: (2, 4, 5), 2: (1, 4, 3, 4), 3: (1, 4, 2, 3, 3)}[d]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    p = _params(4, d, torch.float64)
    w1, b1, w2, b2, w, sc, sh = (p[k] for k in ("w1", "b1", "w2", "b2", "w", "scale", "shift"))
    pools = ("avg", "max")
    assert torch.autograd.gradcheck(
        lambda *a: fused.ChannelGateFunction.apply(*a, pools, "silu", "sigmoid"), (x, w1, b1, w2, b2)
    )
    assert torch.autograd.gradcheck(
        lambda *a: fused.SpatialGateFunction.apply(*a, pools, "sigmoid"), (x, w, sc, sh)
    )
    assert torch.autograd.gradcheck(
        lambda *a: fused.CBAMFunction.apply(*a, pools, ("max", "avg"), "relu", "sigmoid"),
        (x, w1, b1, w2, b2, w, sc, sh),
    )


@pytest.mark.parametrize("kind", ["cam", "sam", "cbam"])
def test_max_ties_give_a_subgradient(kind):
    """Constant input: every max pool is a tie. The fused path sends each pooled
    gradient to one maximiser, amax shares it; both are subgradients, so the gradients
    are finite and their per-pool totals agree."""
    d = 2
    x = torch.full(SHAPES[d], 0.7, dtype=torch.float64, requires_grad=True)
    p = _params(8, d, torch.float64)
    cp, sp = ("avg", "max"), ("avg", "max")
    out, ins = _run(kind, cp, sp, x, p, "fused")
    ref = _equation(kind, cp, sp, x, p)
    torch.testing.assert_close(out, ref)
    dy = torch.randn_like(out)
    gx, *gw = _grads(out, ins, dy)
    rx, *rw = _grads(ref, ins, dy)
    assert torch.isfinite(gx).all()
    # the total gradient mass over the pooled axes is the same for any subgradient
    axes = (1,) if kind == "sam" else tuple(range(1, x.ndim))
    torch.testing.assert_close(gx.sum(axes), rx.sum(axes))
    # weight gradients do not depend on which maximiser was chosen
    for a, b in zip(gw, rw):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous"])
@pytest.mark.parametrize("d", [2, 3])
def test_layouts(layout, d):
    base = torch.randn(SHAPES[d], dtype=torch.float64)
    if layout == "channels_last":
        fmt = torch.channels_last if d == 2 else torch.channels_last_3d
        x = base.contiguous(memory_format=fmt)
    else:
        x = torch.randn(*SHAPES[d][:-1], 2 * SHAPES[d][-1], dtype=torch.float64)[..., ::2]
        assert not x.is_contiguous()
    x.requires_grad_()
    p = _params(8, d, torch.float64)
    cp = sp = ("avg", "max")
    for kind in ("se", "cam", "sam", "cbam"):
        out, ins = _run(kind, ("avg",) if kind == "se" else cp, sp, x, p, "fused")
        ref = _equation(kind, ("avg",) if kind == "se" else cp, sp, x, p)
        torch.testing.assert_close(out, ref)
        dy = torch.randn_like(out).contiguous(memory_format=torch.contiguous_format)
        for a, b in zip(_grads(out, ins, dy), _grads(ref, ins, dy)):
            torch.testing.assert_close(a, b)


def test_saved_for_backward_is_lean():
    """CBAM keeps ~its input (plus 1/C-sized maps) for backward; the equation keeps ~2x."""
    x = torch.randn(2, 32, 6, 8, 8, requires_grad=True)
    p = _params(32, 3, torch.float32, bias=False)

    def saved(fn):
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(seen.values()) / (x.numel() * x.element_size())

    cp = sp = ("avg", "max")
    ours = saved(lambda: _run("cbam", cp, sp, x, p, "fused"))
    eq = saved(lambda: _equation("cbam", cp, sp, x, p))
    assert ours <= 1.0 + 8 / 32 + 0.05  # x, plus maps/gates/int64 indices of size ~1/C each
    assert eq >= 1.9


def test_compile_fullgraph():
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    p = _params(8, 2, torch.float32)

    def f(t):
        return kernels.cbam(t, p["w1"], p["b1"], p["w2"], p["b2"], p["w"], impl="fused")

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    ref = eq_cbam(x, p["w1"], p["b1"], p["w2"], p["b2"], p["w"], ("avg", "max"), ("avg", "max"))
    torch.testing.assert_close(out, ref)
    dy = torch.randn_like(out)
    ins = [x, p["w1"], p["b1"], p["w2"], p["b2"], p["w"]]
    for a, b in zip(_grads(out, ins, dy), _grads(ref, ins, dy)):
        torch.testing.assert_close(a, b)


def test_dispatch_default_and_context(monkeypatch):
    # the rule without the native CPU kernels (no compiler, EXCITE_NATIVE=0); with them,
    # "auto" picks "native" for CPU tensors in eager mode (tests/kernels/test_native.py)
    from excite.kernels import _dispatch

    monkeypatch.setattr(_dispatch, "_native_available", lambda: False)
    assert kernels.get_default_impl() == "auto"
    x = torch.randn(2, 8, 5)
    assert kernels.resolve_impl(None, x) == "fused"
    with kernels.use_impl("reference"):
        assert kernels.resolve_impl(None, x) == "reference"
        assert kernels.resolve_impl("fused", x) == "fused"
    assert kernels.get_default_impl() == "auto"
    assert kernels.resolve_impl("auto", x, supported=False) == "reference"
    # channel-only blocks: fused only for large float32 tensors (where it measured faster)
    big = torch.empty(kernels.CHANNEL_FUSED_MIN_NUMEL, 1, 1)
    assert kernels.resolve_impl("auto", x, kind="channel") == "reference"
    assert kernels.resolve_impl("auto", big, kind="channel") == "fused"
    assert kernels.resolve_impl("auto", big.bfloat16(), kind="channel") == "reference"
    assert kernels.resolve_impl("auto", big.bfloat16()) == "fused"
    assert kernels.resolve_impl("fused", x, kind="channel") == "fused"
    with pytest.raises(ValueError, match="impl='fused' is not available"):
        kernels.resolve_impl("fused", x, supported=False)
    with pytest.raises(ValueError, match="impl must be one of"):
        kernels.set_default_impl("fast")
    with pytest.raises(TypeError, match="impl must be one of"):
        kernels.set_default_impl(None)


def test_argument_errors():
    x = torch.randn(2, 8, 5, 6)
    p = _params(8, 2, torch.float32)
    with pytest.raises(ValueError, match="w1 must have shape"):
        kernels.squeeze_excite(x, p["w2"], None, p["w2"], None)
    with pytest.raises(ValueError, match="pools must be"):
        kernels.channel_attention(x, p["w1"], None, p["w2"], None, pools=("avg", "min"))
    with pytest.raises(ValueError, match="weight must have shape"):
        kernels.spatial_attention(x, torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="activation must be one of"):
        kernels.channel_attention(x, p["w1"], None, p["w2"], None, activation="swish")
    with pytest.raises(ValueError, match="x must have shape"):
        kernels.channel_attention(torch.randn(2, 8), p["w1"], None, p["w2"], None)


def test_compile_dynamic_shapes_inductor():
    """torch.compile's default recompiles with symbolic sizes on a new shape; the fused
    functions must lower in Inductor then too (forward and backward)."""
    p = _params(8, 2, torch.float32)

    def f(t):
        return kernels.cbam(t, p["w1"], p["b1"], p["w2"], p["b2"], p["w"], impl="fused")

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    x = torch.randn(3, 8, 5, 6, requires_grad=True)
    out = compiled(x)
    ref = eq_cbam(x, p["w1"], p["b1"], p["w2"], p["b2"], p["w"], ("avg", "max"), ("avg", "max"))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(out)
    ins = [x, p["w1"], p["b1"], p["w2"], p["b2"], p["w"]]
    for a, b in zip(_grads(out, ins, dy), _grads(ref, ins, dy)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["se", "cam", "sam", "cbam"])
def test_weight_grads_without_input_grad_and_inference(kind):
    """x without requires_grad (the max pools then skip their indices where the weight
    gradients do not need them), and a no-grad forward, still match the equations."""
    x = torch.randn(SHAPES[2], dtype=torch.float64)
    p = _params(8, 2, torch.float64)
    cp = ("avg",) if kind == "se" else ("avg", "max")
    out, ins = _run(kind, cp, ("avg", "max"), x, p, "fused", True)
    ref = _equation(kind, cp, ("avg", "max"), x, p, True)
    torch.testing.assert_close(out, ref)
    dy = torch.randn_like(out)
    for a, b in zip(_grads(out, ins[1:], dy), _grads(ref, ins[1:], dy)):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(_run(kind, cp, ("avg", "max"), x, p, "fused", True)[0], ref)
