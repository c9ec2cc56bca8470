"""The attention factory: one object for "which attention, with which options"."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import excite
from excite.layers import (
    CBAM,
    NO_ATTENTION,
    AttentionFactory,
    SpatialAttention,
    SqueezeExcite,
    attention_factory,
    reset_attention,
    resolve_attention,
)
from excite.layers import registry as registry_module


@pytest.mark.parametrize("spelling", [None, "none", "None", " NONE "])
def test_none_and_none_string_are_one_factory(spelling) -> None:
    factory = attention_factory(spelling)
    assert factory is NO_ATTENTION and factory.is_none and factory.name == "none"
    assert isinstance(factory(16, spatial_dims=3), nn.Identity)


def test_factory_carries_name_options_and_builds_fresh_modules() -> None:
    factory = attention_factory("CBAM", reduction=8, variant="official")
    assert isinstance(factory, AttentionFactory)
    assert factory.name == "cbam" and factory.options == {"reduction": 8, "variant": "official"}
    assert factory.registered and not factory.is_none and factory.placement == "block"
    assert repr(factory) == "attention_factory('cbam', reduction=8, variant='official')"
    assert factory.to_config() == {"name": "cbam", "options": {"reduction": 8, "variant": "official"}}
    a, b = factory(64, spatial_dims=3), factory(64, spatial_dims=3)
    assert isinstance(a, CBAM) and a is not b
    assert a.channel.fc1.out_features == 64 // 8 and a.spatial.conv.weight.ndim == 5
    # the options are a copy: changing it changes nothing
    factory.options["reduction"] = 2
    assert factory.options["reduction"] == 8


def test_equality_and_merging() -> None:
    assert attention_factory("se", reduction=8) == attention_factory("SE", reduction=8)
    assert attention_factory("se", reduction=8) != attention_factory("se", reduction=4)
    assert hash(attention_factory("se")) == hash(attention_factory("se"))
    base = attention_factory("se", reduction=8)
    merged = attention_factory(base, bias=False)
    assert merged.options == {"reduction": 8, "bias": False} and base.options == {"reduction": 8}
    assert attention_factory(base) is base
    assert resolve_attention(base, {"reduction": 2}).options == {"reduction": 2}


def test_module_classes_are_factories_too() -> None:
    factory = attention_factory(SpatialAttention, kernel_size=3)
    assert factory.name == "sam" and factory.registered  # a registered class finds its name
    assert factory(8, spatial_dims=1).conv.weight.shape == (1, 2, 3)

    class Scale(nn.Module):
        def __init__(self, channels: int, *, factor: float = 2.0) -> None:
            super().__init__()
            self.factor = factor

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.factor

    custom = attention_factory(Scale, factor=3.0)
    assert not custom.registered and custom.name.endswith("Scale")
    assert custom(4, spatial_dims=2).factor == 3.0  # no spatial_dims in its signature
    with pytest.raises(ValueError, match="unregistered class"):
        custom.to_config()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: attention_factory("nope"), ValueError, r"attention name must be one of .*'none'.*'nope'"),
        (lambda: attention_factory(3), TypeError, "registered name, None, an nn.Module class"),
        (lambda: attention_factory(nn.ReLU()), TypeError, "registered name"),
        (lambda: attention_factory("se", kernel_size=3), TypeError,
         r"'se' got an unexpected keyword argument 'kernel_size'; its options are: reduction"),
        (lambda: attention_factory("cbam", spatial_dims=3), TypeError, "set by the model"),
        (lambda: attention_factory("none", reduction=4), ValueError, "attention is 'none'"),
        (lambda: resolve_attention("se", [1]), TypeError, "attention_kwargs must be a dict"),
    ],
)
def test_bad_specs_fail_when_resolved(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_create_attention_is_the_factory_called_once() -> None:
    m = excite.create_attention("se", 32, spatial_dims=3, hidden_channels=5)
    assert isinstance(m, SqueezeExcite) and m.fc1.out_features == 5
    factory = attention_factory("se", hidden_channels=5)
    assert excite.create_attention(factory, 32, spatial_dims=3).fc1.out_features == 5


def test_reset_attention_runs_the_family_init() -> None:
    cbam = CBAM(16, variant="official")
    assert torch.equal(cbam.spatial.norm.weight, torch.ones(1))  # PyTorch's default on its own
    reset_attention(cbam)
    assert torch.equal(cbam.spatial.norm.weight, torch.zeros(1))
    paper = CBAM(16)
    before = {k: v.clone() for k, v in paper.state_dict().items()}
    reset_attention(paper)  # nothing of its own to initialise
    assert all(torch.equal(before[k], v) for k, v in paper.state_dict().items())
    reset_attention(nn.Identity())


@pytest.fixture
def scratch_registry():
    before = dict(registry_module._REGISTRY)
    yield
    registry_module._REGISTRY.clear()
    registry_module._REGISTRY.update(before)


def test_stage_placement_puts_one_module_after_each_stage(scratch_registry) -> None:
    """A family that declares ``attention_placement = "stage"`` needs no model change."""

    @excite.register_attention("stage-gate")
    class StageGate(nn.Module):
        attention_placement = "stage"

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.full((channels,), 2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale.view(1, -1, *([1] * (x.ndim - 2)))

    model = excite.create_model("resnet18", attention="stage-gate", num_classes=3, spatial_dims=1)
    gates = {name: m for name, m in model.named_modules() if isinstance(m, StageGate)}
    assert sorted(gates) == [f"layer{i}.attention" for i in range(1, 5)]
    assert [g.scale.numel() for g in gates.values()] == [64, 128, 256, 512]
    assert all(isinstance(b.attention, nn.Identity) for s in model.stages() for b in s[:2])
    # the stage gate runs: doubling each stage's output changes the logits
    x = torch.randn(2, 3, 64)
    model.eval()
    with_gate = model(x)
    for g in gates.values():
        nn.init.ones_(g.scale)
    assert not torch.allclose(with_gate, model(x))
    x3d = excite.create_model("x3d_xs", attention="stage-gate", num_classes=3)
    assert sorted(n for n, m in x3d.named_modules() if isinstance(m, StageGate)) == [
        f"stages.{i}.attention" for i in range(4)
    ]
