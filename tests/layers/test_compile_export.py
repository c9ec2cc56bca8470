"""torch.compile(fullgraph=True) and torch.export, each compared with eager float32.

Compilation is slow on a 2-core machine, so these tests are few and tiny: inductor code
generation once (CBAM 2D); dynamo full-graph capture plus AOT autograd ("aot_eager") for
every module at one or two ranks; ``torch.export`` for every module at every rank.
"""

from __future__ import annotations

import pytest
import torch

from excite.layers import CBAM, ECA, SCSE, ChannelAttention, SpatialAttention, SqueezeExcite

C = 8
SPATIAL = {1: (10,), 2: (6, 7), 3: (3, 4, 5)}

BUILDERS = {
    "se": lambda d: SqueezeExcite(C, reduction=4),
    "cam": lambda d: ChannelAttention(C, reduction=4),
    "sam": lambda d: SpatialAttention(C, spatial_dims=d, kernel_size=3),
    "cbam": lambda d: CBAM(C, spatial_dims=d, reduction=4, kernel_size=3),
    "cbam_official_parallel": lambda d: CBAM(
        C, spatial_dims=d, reduction=4, kernel_size=3, variant="official", arrangement="parallel"
    ),
    "eca": lambda d: ECA(C, kernel_size=3),
    "scse": lambda d: SCSE(C, spatial_dims=d, reduction=4),
    "scse_max": lambda d: SCSE(C, spatial_dims=d, reduction=4, combine="max"),
}


def make(name: str, rank: int) -> tuple[torch.nn.Module, torch.Tensor]:
    return BUILDERS[name](rank).eval(), torch.randn(2, C, *SPATIAL[rank])


def test_compile_inductor_matches_eager() -> None:
    """The default backend (inductor code generation) once, on CBAM, which composes the
    channel and spatial modules."""
    m, x = make("cbam", 2)
    compiled = torch.compile(m, fullgraph=True)  # raises on any graph break
    torch.testing.assert_close(compiled(x), m(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "name, rank",
    [("se", 2), ("cam", 3), ("sam", 2), ("cbam", 1), ("cbam", 3), ("cbam_official_parallel", 2),
     ("eca", 1), ("scse_max", 3)],
)
def test_compile_fullgraph_matches_eager(name: str, rank: int) -> None:
    """Dynamo capture of forward and gate in one graph each, through AOT autograd
    (forward and backward graphs), compared with eager; aot_eager skips code generation."""
    m, x = make(name, rank)
    for fn in (m, m.gate):
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        xr = x.clone().requires_grad_()
        y = compiled(xr)
        torch.testing.assert_close(y, fn(x), atol=1e-6, rtol=1e-6)
        y.sum().backward()
        assert xr.grad is not None and xr.grad.shape == x.shape


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_export_matches_eager(name: str, rank: int) -> None:
    m, x = make(name, rank)
    exported = torch.export.export(m, (x,))
    x2 = torch.randn_like(x)  # a fresh input of the exported shape
    torch.testing.assert_close(exported.module()(x2), m(x2), atol=1e-6, rtol=1e-6)
