"""create_attention / list_attention / register_attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import excite
from excite.layers import (
    CBAM,
    ECA,
    SCSE,
    ChannelAttention,
    SpatialAttention,
    SqueezeExcite,
    create_attention,
    list_attention,
    register_attention,
)
from excite.layers import registry as registry_module

EXPECTED = {
    "se": SqueezeExcite,
    "cam": ChannelAttention,
    "sam": SpatialAttention,
    "cbam": CBAM,
    "eca": ECA,
    "scse": SCSE,
}


@pytest.fixture
def scratch_registry():
    """Names registered inside a test are removed afterwards."""
    before = dict(registry_module._REGISTRY)
    yield
    registry_module._REGISTRY.clear()
    registry_module._REGISTRY.update(before)


def test_list_attention() -> None:
    assert list_attention() == [
        "bam", "cam", "cbam", "ceca", "coord", "eca", "ela", "ese", "fca", "gc", "gct", "ge",
        "nonlocal", "sam", "scse", "se", "simam", "sk", "srm", "strip", "triplet",
    ]
    assert excite.list_attention() == list_attention()


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_create_each(name: str, spatial_dims: int) -> None:
    m = excite.create_attention(name, 64, spatial_dims=spatial_dims)
    assert type(m) is EXPECTED[name]
    x = torch.randn(2, 64, *[4] * spatial_dims)
    assert m(x).shape == x.shape
    # only modules with spatial weights receive spatial_dims
    if name in ("sam", "cbam", "scse"):
        assert m.spatial_dims == spatial_dims
    else:
        assert not hasattr(m, "spatial_dims")


def test_create_is_case_insensitive_and_passes_kwargs() -> None:
    m = create_attention("CBAM", 32, spatial_dims=3, reduction=4, kernel_size=3, variant="official")
    assert isinstance(m, CBAM) and m.variant == "official"
    assert m.channel.fc1.out_features == 8
    assert m.spatial.conv.weight.shape == (1, 2, 3, 3, 3)
    assert create_attention("se", 32, hidden_channels=5).fc1.out_features == 5


@pytest.mark.parametrize("name", [None, "none", "None"])
def test_none_gives_identity(name) -> None:
    m = create_attention(name, 16, spatial_dims=3)
    assert isinstance(m, nn.Identity)
    x = torch.randn(1, 16, 2, 2, 2)
    assert m(x) is x


def test_module_class_is_accepted() -> None:
    m = create_attention(SpatialAttention, 16, spatial_dims=1, kernel_size=3)
    assert isinstance(m, SpatialAttention) and m.spatial_dims == 1
    assert isinstance(create_attention(SqueezeExcite, 16, spatial_dims=3), SqueezeExcite)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"\bname\b.*\['bam', 'cam', .*'triplet', 'none'\].*'nope'"):
        create_attention("nope", 16)
    with pytest.raises(TypeError, match=r"\bname\b.*3"):
        create_attention(3, 16)
    with pytest.raises(TypeError, match=r"\bname\b"):
        create_attention(nn.ReLU(), 16)  # an instance


def test_module_argument_errors_pass_through() -> None:
    with pytest.raises(ValueError, match=r"\bkernel_size\b"):
        create_attention("sam", 16, kernel_size=4)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'kernel_size'"):
        create_attention("se", 16, kernel_size=3)


def test_register_attention(scratch_registry) -> None:
    @register_attention("double")
    class Double(nn.Module):
        def __init__(self, channels: int, *, spatial_dims: int = 2, scale: float = 2.0) -> None:
            super().__init__()
            self.channels, self.spatial_dims, self.scale = channels, spatial_dims, scale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    @register_attention("plain")
    def plain(channels: int) -> nn.Module:  # a function without spatial_dims
        return nn.Identity()

    assert "double" in list_attention() and "plain" in list_attention()
    m = create_attention("double", 4, spatial_dims=3, scale=3.0)
    assert isinstance(m, Double) and m.spatial_dims == 3 and m.scale == 3.0
    assert isinstance(create_attention("plain", 4, spatial_dims=3), nn.Identity)


def test_register_attention_errors(scratch_registry) -> None:
    with pytest.raises(ValueError, match=r"\bname\b.*'se'.*already registered"):
        register_attention("se")
    with pytest.raises(ValueError, match=r"\bname\b.*'none'"):
        register_attention("none")
    with pytest.raises(ValueError, match=r"\bname\b.*lower-case.*'SE2'"):
        register_attention("SE2")
    with pytest.raises(ValueError, match=r"\bname\b.*''"):
        register_attention("")
    with pytest.raises(TypeError, match=r"\bname\b.*None"):
        register_attention(None)
    with pytest.raises(TypeError, match=r"register_attention\('fresh'\).*42"):
        register_attention("fresh")(42)
    assert "fresh" not in list_attention()
