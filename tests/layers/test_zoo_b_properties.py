"""The zoo's part B (sk, bam, gct, fca, srm, nonlocal): shapes, gradients, parameter
counts from the papers' formulas, argument validation, memory formats, low precision,
torch.compile and torch.export."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import excite
from excite.layers import (
    BAM,
    GCT,
    SRM,
    MultiSpectralAttention,
    NonLocal,
    SelectiveKernel,
    attention_factory,
    create_attention,
)

RANKS = (1, 2, 3)
SPATIAL = {1: (9,), 2: (5, 6), 3: (3, 4, 5)}
TINY = {1: (5,), 2: (3, 4), 3: (2, 3, 3)}
C = 8

BUILDERS = {
    "sk": lambda d: SelectiveKernel(C, spatial_dims=d, min_hidden=4),
    "sk_split_groups": lambda d: SelectiveKernel(C, spatial_dims=d, kernel_sizes=(3, 5, 7),
                                                 split_input=False, groups=2, min_hidden=4),
    "bam": lambda d: BAM(C, spatial_dims=d, reduction=2),
    "gct": lambda d: GCT(C),
    "gct_l1": lambda d: GCT(C, mode="l1"),
    "fca": lambda d: MultiSpectralAttention(C, spatial_dims=d, reduction=2, frequencies="top8"),
    "fca_low": lambda d: MultiSpectralAttention(C, spatial_dims=d, reduction=2, frequencies="low4",
                                                dct_size=14),
    "srm": lambda d: SRM(C),
    "nonlocal": lambda d: NonLocal(C, spatial_dims=d),
    "nonlocal_dot_sub": lambda d: NonLocal(C, spatial_dims=d, mode="dot_product", subsample=2),
}
FAMILIES = ("sk", "bam", "gct", "fca", "srm", "nonlocal")


def x_for(rank: int, batch: int = 2, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, C, *SPATIAL[rank], dtype=dtype)


def randomize(module: nn.Module) -> nn.Module:
    """Non-zero values for every parameter (several families start at zero) and BN
    statistics away from (0, 1)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.uniform_(-0.2, 0.2)
    return module


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --- registry and shapes -------------------------------------------------------------


def test_registered_with_placement() -> None:
    names = excite.list_attention()
    for name in FAMILIES:
        assert name in names
    assert attention_factory("bam").placement == "stage"
    for name in ("sk", "gct", "fca", "srm", "nonlocal"):
        assert attention_factory(name).placement == "block"
    for d in RANKS:  # spatial_dims reaches the families with rank-dependent weights
        for name, cls in (("sk", SelectiveKernel), ("bam", BAM), ("fca", MultiSpectralAttention),
                          ("nonlocal", NonLocal)):
            m = create_attention(name, 32, spatial_dims=d)
            assert isinstance(m, cls) and m.spatial_dims == d


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_shapes_dtype_and_maps(name: str, rank: int) -> None:
    m = BUILDERS[name](rank)
    x = x_for(rank)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    n, c, *spatial = x.shape
    g = m.gate(x)
    if name.startswith("sk"):
        assert g.shape == (n, m.num_branches, c, *[1] * rank)
        torch.testing.assert_close(g.sum(1), torch.ones(n, c, *[1] * rank))
    elif name == "bam":
        assert g.shape == x.shape
        torch.testing.assert_close(m(x), x * (1 + g))
    elif name.startswith("nonlocal"):
        keys = math.prod(math.ceil(s / k) for s, k in zip(spatial, m.subsample))
        assert g.shape == (n, math.prod(spatial), keys)
        if m.mode == "embedded_gaussian":
            torch.testing.assert_close(g.sum(-1), torch.ones(n, math.prod(spatial)))
    else:
        assert g.shape == (n, c, *[1] * rank)
        torch.testing.assert_close(m(x), x * g)


# every family at every rank w.r.t. the input; w.r.t. every parameter too at rank 2
GRAD_CASES = [(name, rank, rank == 2) for name in FAMILIES for rank in RANKS] + [
    ("sk_split_groups", 3, True), ("gct_l1", 1, True), ("fca_low", 3, True),
    ("nonlocal_dot_sub", 3, True),
]


@pytest.mark.parametrize("name, rank, with_params", GRAD_CASES)
def test_gradcheck_float64(name: str, rank: int, with_params: bool) -> None:
    """Analytic vs numerical gradients (train mode: BatchNorm uses batch statistics)."""
    m = randomize(BUILDERS[name](rank).double())
    names = [n for n, _ in m.named_parameters()] if with_params else []
    ps = tuple(p.detach().clone().requires_grad_() for n, p in m.named_parameters() if n in names)
    x = torch.randn(3, C, *TINY[rank], dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *ps), eps=1e-6, atol=1e-5, fast_mode=True)


# --- parameter counts from the papers' formulas --------------------------------------


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("channels, reduction", [(64, 16), (48, 4), (256, 16)])
def test_parameter_counts(rank: int, channels: int, reduction: int) -> None:
    c, r, d = channels, reduction, rank
    # SK: M branches of (C_in / G) * C * 3^d weights + BN, W (C x d'), its BN, A (M*C x d')
    for groups, split, kernels in ((1, False, (3, 5)), (4, True, (3, 5)), (2, False, (3, 5, 7))):
        m_branches = len(kernels)
        hidden = max(c // r, 32)
        cin = c // m_branches if split else c
        expected = m_branches * (cin // groups * c * 3**d + 2 * c) + c * hidden + 2 * hidden \
            + hidden * m_branches * c
        sk = SelectiveKernel(c, spatial_dims=d, kernel_sizes=kernels, groups=groups, split_input=split)
        assert n_params(sk) == expected
    # BAM: channel MLP with biases + BN(C); spatial 1x1 (C→C/r) + two 3^d (C/r→C/r) + 1x1 (C/r→1),
    # biases, BN after each
    h = c // r
    channel = c * h + h + h * c + c + 2 * c
    spatial = (c * h + h + 2 * h) + 2 * (h * h * 3**d + h + 2 * h) + (h + 1) + 2
    assert n_params(BAM(c, spatial_dims=d, reduction=r)) == channel + spatial
    # GCT: alpha, gamma, beta per channel
    assert n_params(GCT(c)) == 3 * c
    # FcaNet: the SE MLP without biases; the DCT weights are fixed (no parameters)
    fca = MultiSpectralAttention(c, spatial_dims=d, reduction=r, frequencies="top16")
    assert n_params(fca) == 2 * c * h
    assert not fca.state_dict().keys() - {"fc1.weight", "fc2.weight"}
    # SRM: CFC (C x 2) + BN (C); one style: C x 1
    assert n_params(SRM(c)) == 4 * c
    assert n_params(SRM(c, styles="mean")) == 3 * c
    # non-local: theta, phi, g (C→C/2 with bias), W_z (C/2→C with bias), BN(C)
    inner = c // 2
    assert n_params(NonLocal(c, spatial_dims=d)) == 3 * (c * inner + inner) + inner * c + c + 2 * c
    assert n_params(NonLocal(c, spatial_dims=d, bias=False)) == 4 * c * inner + 2 * c


def test_sknet50_parameter_total() -> None:
    """SKNet-50 (Li et al. 2019, Table 2: 27.5M) is ResNeXt-50 32x4d (25,028,904) with every
    bottleneck's 3x3 grouped convolution (+ BN) replaced by an SK unit (M = 2, G = 32,
    r = 16, L = 32) over its width 128, 256, 512, 1024 (3, 4, 6, 3 blocks)."""
    total = 25_028_904
    for width, blocks in ((128, 3), (256, 4), (512, 6), (1024, 3)):
        replaced = width * width // 32 * 9 + 2 * width
        unit = SelectiveKernel(width, spatial_dims=2, groups=32)
        assert unit.reduce.out_features == max(width // 16, 32)
        total += blocks * (n_params(unit) - replaced)
    assert total == 27_479_784 and round(total / 1e5) == 275


def test_fcanet50_parameter_total() -> None:
    """FcaNet-50 (Qin et al. 2021, Table 4: 28.07M, as SENet-50 without MLP biases) is
    ResNet-50 (25,557,032) with one MultiSpectralAttention(r = 16) per bottleneck."""
    total = 25_557_032 + sum(
        blocks * n_params(MultiSpectralAttention(ch, reduction=16))
        for ch, blocks in ((256, 3), (512, 4), (1024, 6), (2048, 3))
    )
    assert total == 28_071_976 and round(total / 1e4) == 2807


def test_srm_resnet50_parameter_total() -> None:
    """SRM-ResNet-50 (Lee et al. 2019, Table 1: 25.62M) is ResNet-50 (25,557,032) with one
    SRM per bottleneck over 256, 512, 1024, 2048 channels (3, 4, 6, 3 blocks)."""
    total = 25_557_032 + sum(
        blocks * n_params(SRM(ch)) for ch, blocks in ((256, 3), (512, 4), (1024, 6), (2048, 3))
    )
    assert total == 25_617_448 and round(total / 1e4) == 2562


def test_hidden_width_rules() -> None:
    assert SelectiveKernel(64).reduce.out_features == 32  # max(64 // 16, L = 32)
    assert SelectiveKernel(1024).reduce.out_features == 64
    # timm: make_divisible(C / 16, 8), no L
    assert SelectiveKernel(64, divisor=8, min_hidden=1).reduce.out_features == 8
    assert SelectiveKernel(256, divisor=8, min_hidden=1).reduce.out_features == 16
    assert NonLocal(64).inner_channels == 32
    assert NonLocal(64, reduction=8, divisor=8).inner_channels == 8  # timm's NonLocalAttn
    assert NonLocal(16, scale="inner").scale == pytest.approx(8 ** -0.5)
    assert NonLocal(16, scale="channels").scale == pytest.approx(16 ** -0.5)


# --- validation ----------------------------------------------------------------------


INVALID = [
    (lambda: SelectiveKernel(8, kernel_sizes=(3,)), ValueError, r"kernel_sizes.*two"),
    (lambda: SelectiveKernel(8, kernel_sizes=3), TypeError, r"kernel_sizes"),
    (lambda: SelectiveKernel(8, kernel_sizes=(3, 4)), ValueError, r"kernel_sizes.*odd.*4"),
    (lambda: SelectiveKernel(9, split_input=True), ValueError, r"channels.*divisible.*2.*split_input"),
    (lambda: SelectiveKernel(8, groups=3), ValueError, r"groups.*3"),
    (lambda: SelectiveKernel(8, min_hidden=0), ValueError, r"min_hidden.*>= 1.*0"),
    (lambda: SelectiveKernel(8, spatial_dims=4), ValueError, r"spatial_dims.*4"),
    (lambda: SelectiveKernel(8, dilate="yes"), TypeError, r"dilate.*True or False"),
    (lambda: BAM(8, reduction=16), ValueError, r"BAM.*channels=8.*reduction=16.*0 hidden"),
    (lambda: BAM(8, reduction=2, dilation=0), ValueError, r"dilation.*>= 1.*0"),
    (lambda: BAM(8, reduction=2, kernel_size=2), ValueError, r"kernel_size.*odd"),
    (lambda: BAM(8, reduction=2, num_dilated=1.5), TypeError, r"num_dilated"),
    (lambda: GCT(8, mode="l3"), ValueError, r"mode.*\['l2', 'l1'\].*'l3'"),
    (lambda: GCT(8, epsilon=0), ValueError, r"epsilon.*\(0.*0"),
    (lambda: GCT(0), ValueError, r"channels.*>= 1.*0"),
    (lambda: MultiSpectralAttention(8, frequencies="top3"), ValueError, r"frequencies.*top<k>.*'top3'"),
    (lambda: MultiSpectralAttention(8, frequencies="mid4"), ValueError, r"frequencies.*'mid4'"),
    (lambda: MultiSpectralAttention(8, frequencies="top16"), ValueError,
     r"channels must be >= the number of frequencies \(16.*channels=8"),
    (lambda: MultiSpectralAttention(8, frequencies=[(0, 7)]), ValueError, r"frequencies.*\[0, dct_size\).*\(0, 7\)"),
    (lambda: MultiSpectralAttention(8, frequencies=[(0,)]), ValueError, r"frequencies.*2-tuples.*\(0,\)"),
    (lambda: MultiSpectralAttention(8, frequencies=[(0, 1.0)]), TypeError, r"frequencies.*ints"),
    (lambda: MultiSpectralAttention(8, frequencies=5), TypeError, r"frequencies"),
    (lambda: MultiSpectralAttention(8, frequencies="top4", dct_size=4), ValueError, r"dct_size.*>= 7"),
    (lambda: MultiSpectralAttention(8, frequencies="top4", dct_size=(7, 0)), ValueError, r"dct_size.*>= 1"),
    (lambda: MultiSpectralAttention(8, frequencies="top4", dct_size=(7, 7, 7)), ValueError, r"dct_size.*2 entries"),
    (lambda: SRM(8, styles=("mean", "max")), ValueError, r"styles.*\['mean', 'std'\].*'max'"),
    (lambda: SRM(8, styles=()), TypeError, r"styles"),
    (lambda: SRM(8, unbiased=1), TypeError, r"unbiased.*True or False"),
    (lambda: SRM(8, epsilon=-1.0), ValueError, r"epsilon.*-1"),
    (lambda: NonLocal(8, mode="gaussian"), ValueError, r"mode.*embedded_gaussian.*dot_product.*'gaussian'"),
    (lambda: NonLocal(8, scale=0.0), ValueError, r"scale.*\(0.*0"),
    (lambda: NonLocal(8, scale="sqrt"), ValueError, r"scale.*\['channels', 'inner'\].*'sqrt'"),
    (lambda: NonLocal(8, subsample=0), ValueError, r"subsample.*>= 1.*0"),
    (lambda: NonLocal(8, subsample=(1, 2, 2)), ValueError, r"subsample.*2 entries"),
    (lambda: NonLocal(8, reduction=16), ValueError, r"NonLocal.*reduction=16.*0 hidden"),
    (lambda: NonLocal(8, bias=None), TypeError, r"bias.*True or False"),
]


@pytest.mark.parametrize("case", range(len(INVALID)))
def test_invalid_arguments(case: int) -> None:
    build, error, pattern = INVALID[case]
    with pytest.raises(error, match=pattern):
        build()


@pytest.mark.parametrize("name", FAMILIES)
def test_invalid_inputs(name: str) -> None:
    m = create_attention(name, 16, spatial_dims=2)
    with pytest.raises(ValueError, match=r"channels=16.*\(2, 8, 5, 5\)"):
        m(torch.randn(2, 8, 5, 5))
    with pytest.raises(TypeError, match=r"torch.Tensor"):
        m([1.0, 2.0])
    if name not in ("gct", "srm"):  # rank-dependent weights: the rank is checked
        with pytest.raises(ValueError, match=r"spatial_dims=2.*\(N, C, H, W\).*\(2, 16, 5\)"):
            m(torch.randn(2, 16, 5))


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", FAMILIES)
def test_the_shared_input_rules(name: str, train: bool) -> None:
    """An empty batch gives an empty output and gradient (no warning); a zero-size dim,
    a non-float input or one whose dtype differs from the parameters' is refused."""
    import warnings

    m = create_attention(name, 16, spatial_dims=2).train(train)
    x = torch.randn(0, 16, 5, 5, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = m(x)
        y.sum().backward()
    assert y.shape == x.shape and x.grad is not None and x.grad.shape == x.shape
    with pytest.raises(ValueError, match=r"non-empty.*\(2, 16, 0, 5\)"):
        m(torch.randn(2, 16, 0, 5))
    with pytest.raises(TypeError, match=r"floating-point.*int64"):
        m(torch.ones(2, 16, 5, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"float32 parameters.*float64"):
        m(torch.randn(2, 16, 5, 5, dtype=torch.float64))


@pytest.mark.parametrize("name", FAMILIES)
def test_cpu_autocast(name: str) -> None:
    m = randomize(create_attention(name, 16, spatial_dims=2)).eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    torch.testing.assert_close(y.float(), m(x), atol=0.1, rtol=0.1)


def test_unknown_option_names_the_options() -> None:
    with pytest.raises(TypeError, match=r"'nonlocal'.*'kernel_size'.*mode.*subsample"):
        attention_factory("nonlocal", kernel_size=3)


# --- memory formats, precision, determinism ------------------------------------------


@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_channels_last(name: str, rank: int) -> None:
    fmt = torch.channels_last if rank == 2 else torch.channels_last_3d
    m = randomize(BUILDERS[name](rank)).eval()
    x = x_for(rank, batch=3)
    expected, gate = m(x), m.gate(x)
    xl = x.contiguous(memory_format=fmt)
    torch.testing.assert_close(m(xl), expected, atol=1e-5, rtol=1e-5)
    m.to(memory_format=fmt)
    torch.testing.assert_close(m.gate(xl), gate, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m(xl), expected, atol=1e-5, rtol=1e-5)


LOW = {torch.float16: dict(atol=2e-2, rtol=2e-2), torch.bfloat16: dict(atol=1e-1, rtol=1e-1)}


@pytest.mark.parametrize("dtype", list(LOW), ids=str)
@pytest.mark.parametrize("name", FAMILIES)
def test_low_precision_matches_float32(name: str, dtype: torch.dtype) -> None:
    rank = 2
    m = randomize(BUILDERS[name](rank)).eval()
    x = x_for(rank).to(dtype).float()  # representable in the low dtype
    expected = m(x)
    low = BUILDERS[name](rank).eval()
    low.load_state_dict(m.state_dict())
    y = low.to(dtype)(x.to(dtype))
    assert y.dtype == dtype and y.shape == x.shape
    torch.testing.assert_close(y.float(), expected, **LOW[dtype])


@pytest.mark.parametrize("name", FAMILIES)
def test_large_fp16_input_does_not_overflow(name: str) -> None:
    """Values near 1000 over 64 x 64 positions: sums of x (4e6) and of x^2 (4e9) and the
    variances and dot products between positions are far past fp16's 65504, so every
    reduction has to run in float32; the result must stay finite and match float32."""
    m = randomize(create_attention(name, C, spatial_dims=2, **(
        {"frequencies": "top8", "reduction": 2} if name == "fca" else
        {"reduction": 2} if name == "bam" else {}))).eval()
    g = torch.Generator().manual_seed(3)
    x = (1000.0 + 300.0 * torch.randn(2, C, 64, 64, generator=g)).half().float()
    with torch.no_grad():
        if name == "nonlocal":  # keep theta/phi at the input's scale: logits ~ 1e6
            m.theta.weight.mul_(0.1)
            m.phi.weight.mul_(0.1)
        expected = m(x)
        y = m.half()(x.half())
    assert y.dtype == torch.float16 and bool(torch.isfinite(y).all())
    # fp16 keeps 11 bits of the ~1e4 pre-activations, so a few gates in their steep part
    # move; an overflowing reduction would give inf/nan or shift every output
    close = (y.float() - expected).abs() <= 2.0 + 2e-2 * expected.abs()
    assert close.float().mean() > 0.99


@pytest.mark.parametrize("name", ["sk_split_groups", "bam", "nonlocal_dot_sub"])
def test_deterministic_mode(name: str) -> None:
    """The modules with convolution and max-pooling backward passes."""
    m = randomize(BUILDERS[name](3))
    x = x_for(3).requires_grad_()
    expected = m(x)
    (grad_expected,) = torch.autograd.grad(expected.sum(), x)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        y = m(x)
        (grad,) = torch.autograd.grad(y.sum(), x)
    finally:
        torch.use_deterministic_algorithms(before)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, grad_expected, atol=1e-6, rtol=1e-6)


# --- torch.compile and torch.export --------------------------------------------------


@pytest.mark.parametrize(
    "name, rank",
    [("sk", 2), ("bam", 1), ("gct", 3), ("fca", 3), ("srm", 1), ("nonlocal", 3),
     ("nonlocal_dot_sub", 2)],
)
def test_compile_fullgraph_matches_eager(name: str, rank: int) -> None:
    """Dynamo captures forward in one graph (fullgraph raises on a break), AOT autograd
    builds forward and backward; compared with eager."""
    m = randomize(BUILDERS[name](rank)).eval()
    x = x_for(rank)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    xr = x.clone().requires_grad_()
    y = compiled(xr)
    torch.testing.assert_close(y, m(x), atol=1e-5, rtol=1e-5)
    y.sum().backward()
    assert xr.grad is not None and bool(torch.isfinite(xr.grad).all())


@pytest.mark.parametrize(
    "name, rank",
    [("sk", 3), ("bam", 2), ("gct", 1), ("fca", 2), ("fca_low", 3), ("srm", 3), ("nonlocal", 1),
     ("nonlocal", 3), ("nonlocal_dot_sub", 2)],
)
def test_export_matches_eager(name: str, rank: int) -> None:
    m = randomize(BUILDERS[name](rank)).eval()
    x = x_for(rank)
    exported = torch.export.export(m, (x,))
    x2 = torch.randn_like(x)
    torch.testing.assert_close(exported.module()(x2), m(x2), atol=1e-5, rtol=1e-5)
