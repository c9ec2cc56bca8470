"""Models take ``attention=`` as a name, a factory or None, resolved once at their boundary."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import excite
from excite.layers import CBAM, ECA, SpatialAttention, SqueezeExcite, attention_factory
from excite.models import model_info


def _count(model: nn.Module, cls: type[nn.Module]) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize("name", ["x3d_xs", "x3d_m"])
def test_x3d_none_removes_its_own_se(name: str) -> None:
    own = excite.create_model(name)  # the paper's SE, an explicit default
    assert _count(own, SqueezeExcite) == 15 if name == "x3d_xs" else _count(own, SqueezeExcite) > 0
    for spelling in (None, "none", "None", attention_factory(None)):
        model = excite.create_model(name, attention=spelling)
        assert _count(model, SqueezeExcite) == 0 and model.attention_name is None
    # X3D's SE: hidden width make_divisible(inner / 16, 8), e.g. inner 432 -> 27 -> 32
    first_of_stage4 = own.stages[3][0].attention
    assert first_of_stage4.fc1.in_features == 432 and first_of_stage4.fc1.out_features == 32
    assert model_info(name).default_attention == attention_factory("se", reduction=16, divisor=8)


@pytest.mark.parametrize("spec", ["eca", attention_factory("eca"), ECA])
def test_name_factory_and_class_build_the_same_model(spec) -> None:
    model = excite.create_model("resnet18", attention=spec, num_classes=4)
    assert _count(model, ECA) == 8 and model.attention_name == "eca"


def test_none_means_no_attention_everywhere() -> None:
    for name in ("resnet18", "r3d_18", "x3d_xs", "tiny_resnet", "resnet20"):
        for spelling in (None, "none"):
            model = excite.create_model(name, attention=spelling, num_classes=3)
            assert not any(
                isinstance(m, (SqueezeExcite, CBAM, ECA, SpatialAttention)) for m in model.modules()
            ), (name, spelling)


@pytest.mark.parametrize("model_name", ["resnet18", "x3d_xs"])
def test_official_cbam_init_lives_in_the_module(model_name: str) -> None:
    model = excite.create_model(
        model_name, attention="cbam", attention_kwargs={"variant": "official"}, num_classes=3
    )
    norms = [m.spatial.norm for m in model.modules() if isinstance(m, CBAM)]
    assert norms and all(torch.equal(n.weight, torch.zeros(1)) for n in norms)
    paper = excite.create_model(model_name, attention="cbam", num_classes=3)
    assert all(isinstance(m.spatial.norm, nn.Identity) for m in paper.modules() if isinstance(m, CBAM))


def test_attention_stages_use_the_same_factory() -> None:
    factory = attention_factory("se", reduction=4)
    model = excite.create_model("resnet18", attention=factory, attention_stages=(3, 4), num_classes=2)
    assert [isinstance(s[0].attention, SqueezeExcite) for s in model.stages()] == [False, False, True, True]
    assert model.layer3[0].attention.fc1.out_features == 256 // 4
    assert model.attention_factory == factory
