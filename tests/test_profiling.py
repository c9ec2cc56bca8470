"""excite.profile against hand-computed parameters, multiply-adds and saved bytes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import excite
from excite.profiling import profile


def _hand_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, kernel_size=3, padding=1, bias=True),
        nn.ReLU(),
        nn.Conv2d(4, 6, kernel_size=1, groups=2, bias=True),
        nn.Flatten(),
        nn.Linear(6 * 5 * 5, 7),
    )


def test_hand_built_net_params_and_macs():
    result = profile(_hand_net(), (1, 2, 5, 5))
    # conv1: 25 positions x 4 filters x (2 x 3 x 3) = 1800; conv2: 25 x 6 x (4/2 x 1) = 300;
    # linear: 150 x 7 = 1050
    assert result.macs == 1800 + 300 + 1050
    assert result.params == (2 * 4 * 9 + 4) + (2 * 6 + 6) + (150 * 7 + 7)
    assert result.trainable_params == result.params
    rows = {r.name: r for r in result.layers}
    assert [r.name for r in result.layers] == ["0", "1", "2", "3", "4"]
    assert (rows["0"].macs, rows["2"].macs, rows["4"].macs, rows["1"].macs) == (1800, 300, 1050, 0)
    assert rows["0"].output_shape == (1, 4, 5, 5)
    assert rows["4"].output_shape == (1, 7)
    assert rows["2"].params == 18 and rows["0"].type == "Conv2d"
    assert result.output_shape == (1, 7)


def test_macs_scale_with_batch():
    assert profile(_hand_net(), (3, 2, 5, 5)).macs == 3 * 3150


def test_activation_bytes_are_the_saved_tensors():
    # autograd keeps: conv1's input x (2*5*5 floats), ReLU's output (4*25) which conv2
    # also saves (same storage, counted once), and conv2's output (6*25) that the Linear
    # saves through Flatten's view; weights are parameters and not counted.
    result = profile(_hand_net(), (1, 2, 5, 5))
    assert result.activation_bytes == 4 * (50 + 100 + 150)
    half = profile(_hand_net(), (1, 2, 5, 5), dtype=torch.bfloat16)
    assert half.activation_bytes == 2 * (50 + 100 + 150)


def test_frozen_parameters_are_not_trainable():
    net = _hand_net()
    for p in net[0].parameters():
        p.requires_grad_(False)
    result = profile(net, (1, 2, 5, 5))
    assert result.trainable_params == result.params - 76


def test_cbam_counts_its_mlp_once_per_pooled_descriptor():
    cbam = excite.create_attention("cbam", 32, spatial_dims=2)  # paper: no bias, r=16
    result = profile(cbam, (1, 32, 8, 8))
    mlp = 32 * 2 + 2 * 32
    spatial = 2 * 7 * 7 * 8 * 8  # 98 * H * W
    assert result.macs == 2 * mlp + spatial


def test_profile_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = excite.create_model("resnet20", num_classes=10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = profile(model, (2, 3, 32, 32))
    assert not model.training
    for key, value in model.state_dict().items():
        assert value.device.type == "cpu"
        assert torch.equal(value, before[key]), key
    # CIFAR ResNet-20 per 32x32 image (He et al. 2016 quote ~41 M): stem 1024*16*27;
    # stage 1: 6 convs 1024*16*144; stages 2/3: a strided conv (P*C*9*C/2) + 5 convs
    # P*C*9*C with (P, C) = (256, 32), (64, 64); fc 64*10. Pad shortcuts cost nothing.
    stem = 1024 * 16 * 27
    stage1 = 6 * 1024 * 16 * 144
    stage2 = 256 * 32 * 144 + 5 * 256 * 32 * 288
    stage3 = 64 * 64 * 288 + 5 * 64 * 64 * 576
    assert result.macs == 2 * (stem + stage1 + stage2 + stage3 + 640)


def test_table_and_json_render():
    result = profile(_hand_net(), (1, 2, 5, 5))
    table = result.table()
    assert "Conv2d" in table and "1,800" in table
    data = json.loads(result.to_json())
    assert data["macs"] == 3150 and len(data["layers"]) == 5
    assert "layers" not in result.to_dict(per_layer=False)
    assert "3,150" in result.summary()


@pytest.mark.parametrize("shape", [(1,), (1, 0, 4), "1x3", (1, 2.5, 3)])
def test_bad_input_shape_is_rejected(shape):
    with pytest.raises(ValueError, match="input_shape"):
        profile(_hand_net(), shape)


def test_non_module_is_rejected():
    with pytest.raises(TypeError, match="nn.Module"):
        profile(lambda x: x, (1, 2, 5, 5))
