"""torchvision key conversion without torchvision installed (names written out by hand)."""

from __future__ import annotations

import pytest
import torch

from excite.models import create_model, load_torchvision_state_dict
from excite.models.weights import convert_torchvision_state_dict


def test_video_keys_are_renamed():
    # torchvision.models.video naming: stem = Sequential(conv, bn, relu[, conv, bn, relu]),
    # block.conv1 = Sequential(conv_builder, bn, relu), block.conv2 = Sequential(builder, bn)
    t = torch.zeros(1)
    r3d = convert_torchvision_state_dict({
        "stem.0.weight": t, "stem.1.running_mean": t,
        "layer2.0.conv1.0.weight": t, "layer2.0.conv1.1.bias": t,
        "layer2.0.conv2.0.weight": t, "layer2.0.conv2.1.weight": t,
        "layer2.0.downsample.0.weight": t, "fc.bias": t,
    })
    assert sorted(r3d) == sorted([
        "conv1.weight", "bn1.running_mean", "layer2.0.conv1.weight", "layer2.0.bn1.bias",
        "layer2.0.conv2.weight", "layer2.0.bn2.weight", "layer2.0.downsample.0.weight",
        "fc.bias",
    ])
    r21d = convert_torchvision_state_dict({
        "stem.0.weight": t, "stem.1.weight": t, "stem.3.weight": t, "stem.4.weight": t,
        "layer1.0.conv1.0.0.weight": t, "layer1.0.conv1.0.1.weight": t,
        "layer1.0.conv1.0.3.weight": t, "layer1.0.conv1.1.weight": t,
    })
    assert sorted(r21d) == sorted([
        "conv1.0.weight", "conv1.1.weight", "conv1.3.weight", "bn1.weight",
        "layer1.0.conv1.0.weight", "layer1.0.conv1.1.weight", "layer1.0.conv1.3.weight",
        "layer1.0.bn1.weight",
    ])


def test_2d_keys_pass_unchanged_and_round_trip_loads():
    source = create_model("resnet18", num_classes=10)
    target = create_model("resnet18", num_classes=10, attention="se")
    report = load_torchvision_state_dict(target, source.state_dict())
    assert set(report.new) == {k for k in target.state_dict() if ".attention." in k}
    assert torch.equal(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)


def test_unknown_keys_are_refused():
    model = create_model("resnet18", num_classes=10)
    state = dict(model.state_dict())
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="layer9"):
        load_torchvision_state_dict(model, state)
