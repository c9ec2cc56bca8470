"""Shapes, gradients, parameter counts and numerics of every module at every rank."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from excite.layers import (
    CBAM,
    ECA,
    SCSE,
    ChannelAttention,
    SpatialAttention,
    SqueezeExcite,
    create_attention,
)
from excite.layers.rank import global_avg_pool, stable_mean

RANKS = (1, 2, 3)
SPATIAL = {1: (9,), 2: (5, 6), 3: (3, 4, 5)}
TINY = {1: (4,), 2: (3, 3), 3: (2, 3, 3)}
C = 8

# name -> builder(spatial_dims); small reductions so tiny C still has a hidden layer
BUILDERS = {
    "se": lambda d: SqueezeExcite(C, reduction=4),
    "cam": lambda d: ChannelAttention(C, reduction=4),
    "sam": lambda d: SpatialAttention(C, spatial_dims=d, kernel_size=3),
    "cbam": lambda d: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3),
    "cbam_official_parallel": lambda d: CBAM(
        C, spatial_dims=d, reduction=4, kernel_size=3, variant="official", arrangement="parallel"
    ),
    "cbam_spatial_channel": lambda d: CBAM(
        C, spatial_dims=d, reduction=4, kernel_size=3, arrangement="spatial-channel"
    ),
    "eca": lambda d: ECA(C, kernel_size=3),
    "scse": lambda d: SCSE(C, spatial_dims=d, reduction=4),
    "scse_max": lambda d: SCSE(C, spatial_dims=d, reduction=4, combine="max"),
}
CHANNEL_GATES = {"se", "cam", "eca"}
SPATIAL_GATES = {"sam"}


def x_for(rank: int, dtype=torch.float32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, C, *SPATIAL[rank], dtype=dtype)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_shapes_and_dtype(name: str, rank: int) -> None:
    m = BUILDERS[name](rank)
    x = x_for(rank)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    g = m.gate(x)
    n, c, *spatial = x.shape
    if name in CHANNEL_GATES:
        assert g.shape == (n, c, *[1] * rank)
    elif name in SPATIAL_GATES:
        assert g.shape == (n, 1, *spatial)
    else:  # combined maps of CBAM and scSE
        assert g.shape == x.shape
    if name.startswith("cbam"):
        assert m.channel.gate(x).shape == (n, c, *[1] * rank)
        assert m.spatial.gate(x).shape == (n, 1, *spatial)
    # every map is a gate in (0, 1) except scSE's sum of two gates, in (0, 2)
    upper = 2.0 if name == "scse" else 1.0
    assert bool(((g > 0) & (g < upper)).all())


def test_tutorial_shapes() -> None:
    """The issue's example: a (8, 32, 300, 300) input gives (8, 32, 1, 1) and
    (8, 1, 300, 300) maps (smaller spatial size here, same rule)."""
    x = torch.randn(8, 32, 30, 30)
    assert ChannelAttention(32).gate(x).shape == (8, 32, 1, 1)
    assert SpatialAttention(kernel_size=7).gate(x).shape == (8, 1, 30, 30)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gradients_reach_every_parameter(name: str, rank: int) -> None:
    m = BUILDERS[name](rank)
    x = x_for(rank, batch=3).requires_grad_()
    (m(x) * torch.randn_like(x)).sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    params = dict(m.named_parameters())
    assert params, "every module has weights"
    for pname, p in params.items():
        assert p.grad is not None, pname
        assert bool(p.grad.abs().sum() > 0), pname


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gradcheck_float64(name: str, rank: int) -> None:
    """Analytic vs numerical gradients w.r.t. the input and every parameter."""
    m = BUILDERS[name](rank).double()
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in m.named_parameters())
    x = torch.randn(2, C, *TINY[rank], dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    # fast mode checks random projections of the Jacobian (seeded), not every entry
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5, fast_mode=True)


# --- parameter counts from the papers' formulas --------------------------------------


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("channels, reduction", [(64, 16), (256, 16), (48, 4), (10, 3)])
def test_parameter_counts(channels: int, reduction: int) -> None:
    h = channels // reduction
    assert n_params(SqueezeExcite(channels, reduction=reduction)) == 2 * channels * h + h + channels
    assert n_params(SqueezeExcite(channels, reduction=reduction, bias=False)) == 2 * channels * h
    assert n_params(ChannelAttention(channels, reduction=reduction)) == 2 * channels * h
    assert n_params(ChannelAttention(channels, reduction=reduction, bias=True)) == (
        2 * channels * h + h + channels
    )
    for d in RANKS:
        for k in (3, 7):
            assert n_params(SpatialAttention(spatial_dims=d, kernel_size=k)) == 2 * k**d
            assert n_params(SpatialAttention(spatial_dims=d, kernel_size=k, norm=True)) == 2 * k**d + 2
            paper = 2 * channels * h + 2 * k**d
            cbam = CBAM(channels, spatial_dims=d, reduction=reduction, kernel_size=k)
            assert n_params(cbam) == paper
            official = CBAM(channels, spatial_dims=d, reduction=reduction, kernel_size=k,
                            variant="official")
            assert n_params(official) == paper + h + channels + 2
        se = 2 * channels * h + h + channels
        assert n_params(SCSE(channels, spatial_dims=d, reduction=reduction)) == se + channels + 1


@pytest.mark.parametrize("rank", RANKS)
def test_norm_options_parameter_counts(rank: int) -> None:
    """timm's CBAM = paper + a BatchNorm (2 parameters); norm=False removes the official
    variant's BatchNorm; the momentum is the one asked for."""
    k, c, r = 7, 64, 16
    h = c // r
    paper = 2 * c * h + 2 * k**rank
    timm_like = CBAM(c, spatial_dims=rank, reduction=r, norm=True, norm_momentum=0.1)
    assert n_params(timm_like) == paper + 2
    assert timm_like.spatial.norm.momentum == 0.1
    assert n_params(CBAM(c, spatial_dims=rank, reduction=r, variant="official", norm=False)) == (
        paper + h + c
    )
    assert CBAM(c, spatial_dims=rank, variant="official").spatial.norm.momentum == 0.01
    assert CBAM(c, spatial_dims=rank, norm=True).spatial.norm.momentum == 0.01
    sam = SpatialAttention(spatial_dims=rank, norm=True, norm_momentum=0.1)
    assert n_params(sam) == 2 * k**rank + 2 and sam.norm.momentum == 0.1
    assert isinstance(SpatialAttention(spatial_dims=rank, norm_momentum=0.1).norm, nn.Identity)
    assert n_params(ECA(c, kernel_size=5, padding_mode="circular")) == 5


def _scramble_norm(m: nn.Module) -> None:
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                mod.weight.fill_(0.7)
                mod.bias.fill_(0.3)


@pytest.mark.parametrize(
    "build, gamma",
    [
        (lambda: CBAM(16, reduction=4, variant="official"), 0.0),  # the official code's init
        (lambda: CBAM(16, reduction=4, variant="official", norm_momentum=0.1), 0.0),
        (lambda: CBAM(16, reduction=4, norm=True, norm_momentum=0.1), 1.0),  # timm's
        (lambda: CBAM(16, reduction=4, norm=True), 1.0),
        (lambda: SpatialAttention(16, norm=True), 1.0),
        (lambda: SpatialAttention(16, norm=True, pools=("max", "avg")), 1.0),
    ],
)
def test_reset_parameters_norm(build, gamma: float) -> None:
    """Only the official CBAM zero-initialises the spatial BatchNorm; every other norm
    goes back to PyTorch's gamma = 1, beta = 0. The convolution and MLP are untouched."""
    m = build()
    _scramble_norm(m)
    others = {k: v.clone() for k, v in m.state_dict().items() if "norm" not in k}
    m.reset_parameters()
    norm = m.spatial.norm if isinstance(m, CBAM) else m.norm
    assert torch.equal(norm.weight, torch.full((1,), gamma))
    assert torch.equal(norm.bias, torch.zeros(1))
    for k, v in others.items():
        assert torch.equal(m.state_dict()[k], v), k


def test_reset_parameters_without_norm_changes_nothing() -> None:
    for m in (CBAM(16, reduction=4), CBAM(16, reduction=4, variant="official", norm=False),
              SpatialAttention(16)):
        before = {k: v.clone() for k, v in m.state_dict().items()}
        m.reset_parameters()
        assert all(torch.equal(m.state_dict()[k], v) for k, v in before.items())


def test_parameter_counts_issue_examples() -> None:
    # paper CBAM(64, r=16) in 2D: 2*64*4 + 2*7*7 = 610; official adds 4 + 64 biases + 2 BN
    assert n_params(CBAM(64, reduction=16)) == 610
    assert n_params(CBAM(64, reduction=16, variant="official")) == 610 + 4 + 64 + 2
    assert n_params(SpatialAttention(spatial_dims=3, kernel_size=(3, 7, 7))) == 2 * 3 * 7 * 7
    assert n_params(SqueezeExcite(64, hidden_channels=5)) == 2 * 64 * 5 + 5 + 64
    assert n_params(ECA(2048)) == 7


def test_se_resnet50_parameter_total() -> None:
    """ResNet-50 (torchvision: 25,557,032 params) plus one SE(r=16) per bottleneck
    (3, 4, 6, 3 blocks of 256, 512, 1024, 2048 output channels) is SE-ResNet-50's
    published 28,088,024 (timm seresnet50)."""
    blocks = {256: 3, 512: 4, 1024: 6, 2048: 3}
    se_total = sum(count * n_params(SqueezeExcite(c, reduction=16)) for c, count in blocks.items())
    assert 25_557_032 + se_total == 28_088_024


@pytest.mark.parametrize(
    "channels, reduction, divisor, hidden",
    # divisor 1: floor(C / r); divisor 8: C / r rounded to a multiple of 8, at least 8,
    # bumped up one multiple when rounding down loses more than 10% (36 / 4 = 9 -> 8 -> 16)
    [(64, 16, 1, 4), (100, 16, 1, 6), (64, 16, 8, 8), (96, 4, 8, 24), (100, 8, 8, 16),
     (76, 4, 8, 24), (152, 4, 8, 40), (36, 1 / 0.25, 8, 16)],
)
def test_se_hidden_width_rounding(channels: int, reduction, divisor: int, hidden: int) -> None:
    m = SqueezeExcite(channels, reduction=reduction, divisor=divisor)
    assert m.fc1.out_features == hidden and m.fc2.in_features == hidden


# --- numerics ------------------------------------------------------------------------


DTYPE_TOL = {
    torch.float64: dict(atol=1e-6, rtol=1e-6),
    torch.bfloat16: dict(atol=6e-2, rtol=6e-2),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
}


@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=str)
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_dtype_matrix(name: str, rank: int, dtype: torch.dtype) -> None:
    m = BUILDERS[name](rank).eval()
    x = x_for(rank)
    expected = m(x)
    low = BUILDERS[name](rank).eval()
    low.load_state_dict(m.state_dict())
    low = low.to(dtype)
    y = low(x.to(dtype))
    assert y.dtype == dtype and y.shape == x.shape
    torch.testing.assert_close(y.float(), expected, **DTYPE_TOL[dtype])


def test_half_precision_pooling_accumulates_in_float32() -> None:
    """1000 over 16^3 positions sums to 4.1e6, far past fp16's 65504: a float16
    accumulator would overflow; the pooled value must be exactly 1000."""
    x = torch.full((1, 4, 16, 16, 16), 1000.0, dtype=torch.float16)
    assert torch.equal(global_avg_pool(x), torch.full((1, 4), 1000.0, dtype=torch.float16))
    assert stable_mean(x, 1).dtype == torch.float16
    m = SqueezeExcite(4, reduction=2).half()
    y = m(x)
    assert y.dtype == torch.float16 and bool(torch.isfinite(y).all())
    xb = x.bfloat16()
    assert global_avg_pool(xb).dtype == torch.bfloat16
    assert torch.equal(global_avg_pool(xb), torch.full((1, 4), 1000.0, dtype=torch.bfloat16))


@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_channels_last(name: str, rank: int) -> None:
    fmt = torch.channels_last if rank == 2 else torch.channels_last_3d
    m = BUILDERS[name](rank).eval()
    x = x_for(rank, batch=3)
    expected = m(x)
    xl = x.contiguous(memory_format=fmt)
    assert xl.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(m(xl), expected, atol=1e-6, rtol=1e-6)
    gate_expected = m.gate(x)
    m.to(memory_format=fmt)  # channels_last weights too (the conv weights of sam/cbam/scse)
    torch.testing.assert_close(m.gate(xl), gate_expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(m(xl), expected, atol=1e-6, rtol=1e-6)


@contextlib.contextmanager
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_deterministic_mode(name: str, rank: int) -> None:
    m = BUILDERS[name](rank)
    x = x_for(rank).requires_grad_()
    expected = m(x)
    (grad_expected,) = torch.autograd.grad(expected.sum(), x)
    with deterministic():
        y = m(x)
        (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, grad_expected, atol=1e-6, rtol=1e-6)


def test_registry_modules_are_built_for_the_rank() -> None:
    for d in RANKS:
        x = x_for(d)
        for name in ("sam", "cbam", "scse"):
            m = create_attention(name, C, spatial_dims=d, reduction=4) if name != "sam" else (
                create_attention(name, C, spatial_dims=d)
            )
            assert m.spatial_dims == d
            assert m(x).shape == x.shape
