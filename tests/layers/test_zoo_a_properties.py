"""Zoo part A: gradients, parameter counts, validation, layouts, half precision,
``torch.compile`` and ``torch.export`` for ese, ge, gc, coord, simam, triplet, strip, ela."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import excite
from excite.layers import (
    CoordinateAttention,
    EffectiveSqueezeExcite,
    EfficientLocalAttention,
    GatherExcite,
    GlobalContext,
    SimAM,
    StripPooling,
    TripletAttention,
    attention_factory,
    create_attention,
)
from excite.layers.efficient_local import default_norm_groups

RANKS = (1, 2, 3)
C = 8
SPATIAL = {1: (10,), 2: (6, 7), 3: (3, 4, 5)}
TINY = {1: (4,), 2: (3, 3), 3: (2, 3, 3)}

BUILDERS = {
    "ese": lambda d: EffectiveSqueezeExcite(C),
    "ge": lambda d: GatherExcite(C, spatial_dims=d),
    "ge_extent_mlp": lambda d: GatherExcite(C, spatial_dims=d, extent=2, mlp=True, reduction=4),
    "ge_learned": lambda d: GatherExcite(
        C, spatial_dims=d, extent=2, learned_gather=True, mlp=True, reduction=4
    ),
    "gc": lambda d: GlobalContext(C, reduction=4),
    "gc_scale_add": lambda d: GlobalContext(C, reduction=4, fusion="scale+add"),
    "coord": lambda d: CoordinateAttention(C, spatial_dims=d, reduction=4, min_hidden=2),
    "simam": lambda d: SimAM(),
    "triplet": lambda d: TripletAttention(C, spatial_dims=d, kernel_size=3),
    "strip": lambda d: StripPooling(C, spatial_dims=d),
    "ela": lambda d: EfficientLocalAttention(C, spatial_dims=d, kernel_size=3, norm_groups=2),
}
NAMES = sorted(BUILDERS)
REGISTERED = {
    "ese": EffectiveSqueezeExcite, "ge": GatherExcite, "gc": GlobalContext,
    "coord": CoordinateAttention, "simam": SimAM, "triplet": TripletAttention,
    "strip": StripPooling, "ela": EfficientLocalAttention,
}


def randomize(m: nn.Module, seed: int = 0) -> nn.Module:
    """Random non-zero weights (GC's zero-initialised last layers included) and BatchNorm
    statistics away from the defaults."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.ndim == 1 else 0.0) * 0.2)
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return m


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --- registry --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_registered_names_build_the_class_at_every_rank(name: str) -> None:
    assert name in excite.list_attention()
    factory = attention_factory(name)
    assert factory.placement == "block" and factory.registered
    for d in RANKS:
        m = create_attention(name, 16, spatial_dims=d)
        assert type(m) is REGISTERED[name]
        x = torch.randn(2, 16, *SPATIAL[d])
        y = m(x)
        assert y.shape == x.shape and y.dtype == x.dtype


# --- gradients -------------------------------------------------------------------------


GRADCHECK = [n for n in NAMES if n not in ("ge", "gc")]  # their variants cover them


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("name", GRADCHECK)
def test_gradcheck_float64(name: str, rank: int) -> None:
    """Analytic vs numerical gradients w.r.t. the input and every parameter (train mode:
    BatchNorm on batch statistics)."""
    m = randomize(BUILDERS[name](rank)).double()
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in m.named_parameters())
    x = torch.randn(2, C, *TINY[rank], dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5, fast_mode=True)


# --- parameter counts from the papers' formulas -----------------------------------------


@pytest.mark.parametrize("channels", [16, 64, 96])
@pytest.mark.parametrize("d", RANKS)
def test_parameter_counts(channels: int, d: int) -> None:
    c = channels
    # eSE: one C x C matrix plus bias
    assert n_params(EffectiveSqueezeExcite(c)) == c * c + c
    assert n_params(EffectiveSqueezeExcite(c, bias=False)) == c * c
    # GE: theta-minus is parameter-free; theta: log2(e) depth-wise 3^d kernels + BN;
    # theta-plus adds the C -> C/r -> C bottleneck; the global theta kernel is the map
    h = c // 16
    mlp = 2 * c * h + h + c
    assert n_params(GatherExcite(c, spatial_dims=d)) == 0
    assert n_params(GatherExcite(c, spatial_dims=d, extent=8)) == 0
    assert n_params(GatherExcite(c, spatial_dims=d, mlp=True)) == mlp
    for e in (2, 4, 8):
        theta = int(math.log2(e)) * (c * 3**d + 2 * c)
        assert n_params(GatherExcite(c, spatial_dims=d, extent=e, learned_gather=True)) == theta
        assert n_params(
            GatherExcite(c, spatial_dims=d, extent=e, learned_gather=True, mlp=True)
        ) == theta + mlp
    size = (3, 4, 5)[:d]
    assert n_params(
        GatherExcite(c, spatial_dims=d, learned_gather=True, feature_size=size)
    ) == c * math.prod(size) + 2 * c
    # GC: W_k (C + 1) plus per transform 2*C*C/r + C/r + C (biases) + 2*C/r (LayerNorm)
    transform = 2 * c * h + h + c + 2 * h
    assert n_params(GlobalContext(c)) == c + 1 + transform
    assert n_params(GlobalContext(c, fusion="scale+add")) == c + 1 + 2 * transform
    assert n_params(GlobalContext(c, pooling="avg", fusion="scale")) == transform
    # coordinate attention: m = max(8, C // 32); F_1 + BN + one m -> C conv per axis
    m = max(8, c // 32)
    coord = c * m + m + 2 * m + d * (m * c + c)
    assert n_params(CoordinateAttention(c, spatial_dims=d)) == coord
    assert n_params(CoordinateAttention(c, spatial_dims=d, bias=False, norm=False)) == (
        c * m + d * m * c
    )
    # SimAM: none
    assert n_params(SimAM(c)) == 0
    # triplet: d + 1 branches of 2 * k^d conv weights + 2 BatchNorm
    for k in (3, 7):
        assert n_params(TripletAttention(c, spatial_dims=d, kernel_size=k)) == (d + 1) * (2 * k**d + 2)
        assert n_params(TripletAttention(spatial_dims=d, kernel_size=k, spatial=False, norm=False)) == (
            d * 2 * k**d
        )
    # strip pooling: d C -> C kernel-3 strip convs + BN, the C -> C fusion conv with bias
    assert n_params(StripPooling(c, spatial_dims=d)) == d * 3 * c * c + 2 * d * c + c * c + c
    assert n_params(StripPooling(c, spatial_dims=d, depthwise=True, norm=False, fusion="sum")) == (
        d * 3 * c
    )
    # ELA: k * C * C / g for the grouped conv + 2C GroupNorm, shared or one per axis
    assert n_params(EfficientLocalAttention(c, spatial_dims=d)) == 7 * c + 2 * c
    assert n_params(EfficientLocalAttention(c, spatial_dims=d, kernel_size=5, conv_groups=c // 8)) == (
        5 * c * 8 + 2 * c
    )
    assert n_params(EfficientLocalAttention(c, spatial_dims=d, shared=False, bias=True)) == (
        d * (7 * c + c + 2 * c)
    )


def test_triplet_in_resnet50_adds_300_per_bottleneck() -> None:
    """ResNet-50 (torchvision's 25,557,032 parameters) plus (d + 1)(2 k^2 + 2) = 300 in
    each of its 16 bottlenecks."""
    with torch.device("meta"):
        triplet = excite.create_model("resnet50", attention="triplet")
    assert n_params(triplet) == 25_557_032 + 16 * 300


def test_hidden_widths() -> None:
    assert CoordinateAttention(64).conv1.out_channels == 8  # max(8, 64 // 32)
    assert CoordinateAttention(512).conv1.out_channels == 16
    assert CoordinateAttention(64, hidden_channels=5).conv1.out_channels == 5
    assert GlobalContext(256).add_transform.fc1.out_features == 16
    assert GlobalContext(64, hidden_channels=8).add_transform.fc1.out_features == 8
    assert GatherExcite(64, mlp=True, reduction=8).mlp.fc1.out_channels == 8
    assert [default_norm_groups(c) for c in (64, 54, 24, 7, 1)] == [16, 9, 12, 7, 1]
    assert EfficientLocalAttention(54).norms[0].num_groups == 9


# --- validation ------------------------------------------------------------------------


BAD_ARGUMENTS = [
    (lambda: EffectiveSqueezeExcite(0), ValueError, r"channels.*0"),
    (lambda: EffectiveSqueezeExcite(8, bias=1), TypeError, r"bias.*1"),
    (lambda: EffectiveSqueezeExcite(8, gate="hardest"), ValueError, r"gate.*hardest"),
    (lambda: GatherExcite(8, extent=1), ValueError, r"extent.*1"),
    (lambda: GatherExcite(8, extent=2.0), TypeError, r"extent.*2\.0"),
    (lambda: GatherExcite(8, extent=6, learned_gather=True), ValueError, r"extent.*power of two.*6"),
    (lambda: GatherExcite(8, learned_gather=True), ValueError, r"feature_size.*required"),
    (lambda: GatherExcite(8, extent=2, feature_size=4), ValueError, r"feature_size.*only.*4"),
    (lambda: GatherExcite(8, learned_gather=True, feature_size=(4, 0)), ValueError, r"feature_size.*0"),
    (lambda: GatherExcite(8, mlp=True, reduction=16), ValueError, r"channels=8.*reduction=16"),
    (lambda: GatherExcite(8, spatial_dims=4), ValueError, r"spatial_dims.*4"),
    (lambda: GatherExcite(8, learned_gather="yes"), TypeError, r"learned_gather.*yes"),
    (lambda: GlobalContext(64, fusion="mul"), ValueError, r"fusion.*scale\+add.*'mul'"),
    (lambda: GlobalContext(64, pooling="max"), ValueError, r"pooling.*'max'"),
    (lambda: GlobalContext(64, norm_eps=0.0), ValueError, r"norm_eps.*0\.0"),
    (lambda: GlobalContext(64, reduction=0), ValueError, r"reduction.*0"),
    (lambda: GlobalContext(8, reduction=16), ValueError, r"channels=8.*reduction=16"),
    (lambda: GlobalContext(64, hidden_channels=0), ValueError, r"hidden_channels.*0"),
    (lambda: CoordinateAttention(8, min_hidden=0), ValueError, r"min_hidden.*0"),
    (lambda: CoordinateAttention(8, activation="swish2"), ValueError, r"activation.*swish2"),
    (lambda: CoordinateAttention(8, spatial_dims=0), ValueError, r"spatial_dims.*0"),
    (lambda: SimAM(e_lambda=0), ValueError, r"e_lambda.*0"),
    (lambda: SimAM(e_lambda="1e-4"), TypeError, r"e_lambda.*1e-4"),
    (lambda: TripletAttention(kernel_size=4), ValueError, r"kernel_size.*odd.*4"),
    (lambda: TripletAttention(kernel_size=(3, 3)), TypeError, r"kernel_size.*\(3, 3\)"),
    (lambda: TripletAttention(spatial=None), TypeError, r"spatial.*None"),
    (lambda: StripPooling(8, kernel_size=2), ValueError, r"kernel_size.*2"),
    (lambda: StripPooling(8, fusion="mean"), ValueError, r"fusion.*'mean'"),
    (lambda: StripPooling(8, depthwise=0), TypeError, r"depthwise.*0"),
    (lambda: EfficientLocalAttention(8, conv_groups=3), ValueError, r"conv_groups.*divide.*channels=8.*3"),
    (lambda: EfficientLocalAttention(8, norm_groups=16), ValueError, r"norm_groups.*divide.*16"),
    (lambda: EfficientLocalAttention(8, kernel_size=0), ValueError, r"kernel_size.*0"),
    (lambda: EfficientLocalAttention(8, shared="no"), TypeError, r"shared.*no"),
]


@pytest.mark.parametrize("build, error, pattern", BAD_ARGUMENTS,
                         ids=[f"case{i}" for i in range(len(BAD_ARGUMENTS))])
def test_bad_arguments_name_the_argument(build, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        build()


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name: str) -> None:
    m = BUILDERS[name](2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        m([[1.0]])
    if name != "simam":  # SimAM (channels=None) accepts any channel count
        with pytest.raises(ValueError, match=r"channels=8"):
            m(torch.randn(2, 5, 6, 7))
    if getattr(m, "spatial_dims", None) is not None:
        with pytest.raises(ValueError, match=r"spatial_dims=2"):
            m(torch.randn(2, C, 6))
    with pytest.raises(TypeError, match="int64"):
        m(torch.ones(2, C, 6, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(2, 8, 0, 7\)"):
        m(torch.randn(2, C, 0, 7))
    x64 = torch.randn(2, C, 6, 7, dtype=torch.float64)
    if any(True for _ in m.parameters()):  # weights fix the dtype, as nn.Linear / nn.Conv do
        with pytest.raises(TypeError, match=r"float64.*float32|float32.*float64"):
            m(x64)
        assert m.double()(x64).dtype == torch.float64
    else:  # parameter-free: any floating dtype
        assert m(x64).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name: str) -> None:
    m = BUILDERS[name](2)
    x = torch.randn(0, C, 6, 7, requires_grad=True)
    y = m(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape


def test_learned_global_gather_checks_the_feature_size() -> None:
    m = GatherExcite(C, spatial_dims=2, learned_gather=True, feature_size=(6, 7))
    with pytest.raises(ValueError, match=r"feature_size=\(6, 7\).*\(2, 8, 5, 7\)"):
        m(torch.randn(2, C, 5, 7))


def test_unknown_option_through_the_factory() -> None:
    with pytest.raises(TypeError, match=r"'ge'.*'extant'.*extent"):
        attention_factory("ge", extant=2)


# --- initialisation ---------------------------------------------------------------------


def test_global_context_starts_as_identity_and_models_keep_its_init() -> None:
    """The authors' init: zero last transform layer ("add": the identity at start;
    "scale": a constant sigma(0) = 1/2) and a fan-in Kaiming W_k; a model's generic
    init does not overwrite it."""
    x = torch.randn(2, 32, 5, 6)
    torch.testing.assert_close(GlobalContext(32)(x), x)
    torch.testing.assert_close(GlobalContext(32, fusion="scale")(x), x * 0.5)
    model = excite.create_model("tiny_resnet", attention="gc", spatial_dims=2)
    gcs = [m for m in model.modules() if isinstance(m, GlobalContext)]
    assert len(gcs) == 4
    for gc in gcs:
        assert not gc.add_transform.fc2.weight.any() and not gc.add_transform.fc2.bias.any()
        assert not gc.attn.bias.any()
    m = randomize(GlobalContext(256))
    m.reset_parameters()
    std = float(m.attn.weight.detach().std())
    assert 0.5 * math.sqrt(2 / 256) < std < 1.5 * math.sqrt(2 / 256)


# --- layouts and precision ---------------------------------------------------------------


@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_channels_last(name: str, rank: int) -> None:
    fmt = torch.channels_last if rank == 2 else torch.channels_last_3d
    m = randomize(BUILDERS[name](rank)).eval()
    x = torch.randn(3, C, *SPATIAL[rank])
    expected = m(x)
    xl = x.contiguous(memory_format=fmt)
    torch.testing.assert_close(m(xl), expected, atol=1e-6, rtol=1e-6)
    m.to(memory_format=fmt)
    torch.testing.assert_close(m(xl), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_large_magnitude(name: str, dtype: torch.dtype) -> None:
    """Values near 1000 over 8 x 16 x 16 positions: every pooled sum (128 to 2048 values,
    up to 2e6) is far past fp16's 65504, so a half accumulator would overflow; the
    half-precision module must stay finite, keep its dtype and match float32."""
    g = torch.Generator().manual_seed(3)
    x = (1000 + 20 * torch.randn(1, C, 8, 16, 16, generator=g)).to(dtype)
    low = randomize(BUILDERS[name](3)).eval().to(dtype)
    ref = BUILDERS[name](3).eval()  # float32 with the same (rounded) weights and input
    ref.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in low.state_dict().items()})
    with torch.no_grad():
        expected = ref(x.float())
        y = low(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert bool(torch.isfinite(y).all())
    # element-wise, a gate near its steepest point amplifies half-precision rounding of
    # the intermediate maps; on average the outputs agree to the format's precision
    error = (y.float() - expected).abs().mean() / expected.abs().mean()
    assert float(error) < (2e-3 if dtype == torch.float16 else 1.5e-2)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_mode(name: str) -> None:
    """Same output and input gradient with ``torch.use_deterministic_algorithms(True)``
    (GE's windowed mean avoids ``avg_pool3d``, whose CUDA backward refuses that mode)."""
    m = randomize(BUILDERS[name](3))
    x = torch.randn(2, C, *SPATIAL[3], requires_grad=True)
    expected = m(x)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        y = m(x)
        (grad,) = torch.autograd.grad(y.square().sum(), x)
    finally:
        torch.use_deterministic_algorithms(before)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, grad_expected, atol=1e-5, rtol=1e-5)


# --- torch.compile and torch.export ----------------------------------------------------

# one variant of every family; dynamo capture costs seconds on 2 cores, so compile runs
# each family at one rank (all three covered) and export at every rank
FAMILIES = ["ese", "ge_learned", "gc_scale_add", "coord", "simam", "triplet", "strip", "ela"]
COMPILE_RANK = {name: RANKS[i % 3] for i, name in enumerate(FAMILIES)}


@pytest.mark.parametrize("name", FAMILIES)
def test_compile_fullgraph_matches_eager(name: str) -> None:
    """Dynamo full-graph capture (raises on a graph break) through AOT autograd, forward
    and backward, against eager."""
    rank = COMPILE_RANK[name]
    m = randomize(BUILDERS[name](rank)).eval()
    x = torch.randn(2, C, *SPATIAL[rank])
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    xr = x.clone().requires_grad_()
    y = compiled(xr)
    torch.testing.assert_close(y, m(x), atol=1e-6, rtol=1e-5)
    y.square().sum().backward()
    xe = x.clone().requires_grad_()
    m(xe).square().sum().backward()
    torch.testing.assert_close(xr.grad, xe.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("name", FAMILIES + ["ge", "ge_extent_mlp", "gc"])
def test_export_matches_eager(name: str, rank: int) -> None:
    m = randomize(BUILDERS[name](rank)).eval()
    x = torch.randn(2, C, *SPATIAL[rank])
    exported = torch.export.export(m, (x,))
    x2 = torch.randn_like(x)
    torch.testing.assert_close(exported.module()(x2), m(x2), atol=1e-6, rtol=1e-5)
