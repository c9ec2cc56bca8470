"""Weight compatibility with torchvision (skipped when torchvision is not installed).

torchvision is the independent reference: its model is built with random weights, its
state dict is loaded into the excite model, and the logits must agree to 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from excite.models import create_model, load_torchvision_state_dict

tv = pytest.importorskip("torchvision")

CASES = [
    ("resnet18", (2, 3, 64, 64), {}),
    ("resnet50", (2, 3, 64, 64), {}),
    ("resnext50_32x4d", (1, 3, 64, 64), {}),
    ("r3d_18", (1, 3, 4, 32, 32), {}),
    ("mc3_18", (1, 3, 4, 32, 32), {}),
    ("r2plus1d_18", (1, 3, 4, 32, 32), {}),
]


def _torchvision_model(name: str, num_classes: int) -> torch.nn.Module:
    if name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        return getattr(tv.models.video, name)(weights=None, num_classes=num_classes)
    return getattr(tv.models, name)(weights=None, num_classes=num_classes)


def _randomise_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_logits_match_torchvision(name, shape, kwargs):
    torch.manual_seed(0)
    reference = _torchvision_model(name, 10).eval()
    _randomise_bn(reference)
    ours = create_model(name, num_classes=10, **kwargs).eval()
    report = load_torchvision_state_dict(ours, reference.state_dict())
    assert report.new == ()
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def test_2d_resnet_state_dict_keys_are_torchvision_keys():
    reference = tv.models.resnet50(weights=None)
    ours = create_model("resnet50")
    assert list(ours.state_dict()) == list(reference.state_dict())


@pytest.mark.parametrize("name", ["resnet50", "r2plus1d_18"])
def test_backbone_loads_under_attention_and_attention_keys_are_new(name):
    reference = _torchvision_model(name, 10)
    ours = create_model(name, num_classes=10, attention="cbam")
    report = load_torchvision_state_dict(ours, reference.state_dict())
    assert report.new and all(".attention." in k for k in report.new)
    own = ours.state_dict()
    for key in ("fc.weight", "layer1.0.bn1.running_var"):
        torch.testing.assert_close(own[key], report_source(reference, key))


def report_source(reference: torch.nn.Module, key: str) -> torch.Tensor:
    state = reference.state_dict()
    if key in state:
        return state[key]
    return state[key.replace("bn1", "conv1.1")]  # video naming


def test_mismatched_head_is_refused():
    reference = tv.models.resnet18(weights=None, num_classes=10)
    ours = create_model("resnet18", num_classes=5)
    with pytest.raises(ValueError, match="fc.weight"):
        load_torchvision_state_dict(ours, reference.state_dict())


@pytest.mark.parametrize("name", ["resnet18", "r2plus1d_18"])
def test_convert_state_dict_torchvision_source_gives_torchvision_logits(name):
    """excite.convert_state_dict(source="torchvision") is the renaming used above."""
    from excite.interop import convert_state_dict

    torch.manual_seed(0)
    reference = _torchvision_model(name, 10).eval()
    _randomise_bn(reference)
    ours = create_model(name, num_classes=10).eval()
    ours.load_state_dict(convert_state_dict(reference.state_dict(), source="torchvision"), strict=True)
    x = torch.randn((1, 3, 4, 32, 32) if name.startswith("r2") else (1, 3, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)
