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


# ------------------------------------------------ layouts that other codebases' weights need

import math  # noqa: E402

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from excite.interop import load_weights_into  # noqa: E402
from excite.models import ResNet  # noqa: E402
from excite.models import resnet as excite_blocks  # noqa: E402
from excite.models.resnet import PadShortcut  # noqa: E402


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet20", "r2plus1d_18", "mc3_18"])
def test_build_options_rebuild_the_same_architecture(name):
    with torch.device("meta"):
        model = create_model(name, attention="cbam", num_classes=7)
        again = ResNet(**model.build_options)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_deep_stem_is_three_3x3_convolutions_32_32_64():
    """ResNet-D's stem (timm's resnet*d): the parameter difference to the 7x7 stem is the
    three 3x3 kernels and two BatchNorms minus the 7x7 kernel."""
    with torch.device("meta"):
        plain = create_model("resnet50")
        deep = create_model("resnet50", stem_type="deep", shortcut="avgpool")
    convs = [deep.conv1[i] for i in (0, 3, 6)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 32, (3, 3), (2, 2)), (32, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    extra = 3 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 2 * (2 * 32) - 3 * 64 * 49
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(deep) - count(plain) == extra == 19_232


def test_avgpool_shortcut_is_ceil_mode_average_then_projection():
    model = create_model("resnet50", shortcut="avgpool", num_classes=5).eval()
    shortcut = model.layer2[0].downsample
    assert isinstance(model.layer1[0].downsample[0], nn.Identity)  # stride 1: no pooling
    x = torch.randn(2, 256, 7, 7)  # odd size: ceil_mode keeps the last row / column
    pooled = torch.zeros(2, 256, 4, 4)
    for i in range(4):
        for j in range(4):
            pooled[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((2, 3))
    conv, bn = shortcut[1], shortcut[2]
    expected = F.batch_norm(F.conv2d(pooled, conv.weight), bn.running_mean, bn.running_var,
                            bn.weight, bn.bias, eps=bn.eps)
    with torch.no_grad():
        torch.testing.assert_close(shortcut(x), expected, rtol=1e-5, atol=1e-5)


def test_pad_shortcut_strides_per_axis():
    shortcut = PadShortcut((1, 2, 2), 4)
    x = torch.randn(1, 4, 4, 6, 6)
    out = shortcut(x)
    assert out.shape == (1, 8, 4, 3, 3)
    torch.testing.assert_close(out[:, 2:6], x[:, :, :, ::2, ::2])


def test_time_kernel_is_the_i3d_layout():
    model = create_model("resnet20", spatial_dims=3, time_kernel={"stem": 5, "layer3": 1}, num_classes=3)
    assert model.conv1.kernel_size == (5, 3, 3) and model.conv1.stride == (1, 1, 1)
    assert model.layer2[0].conv1.kernel_size == (3, 3, 3) and model.layer2[0].conv1.stride == (1, 2, 2)
    assert model.layer3[0].conv1.kernel_size == (1, 3, 3)
    assert model.layer2[0].downsample.stride == (1, 2, 2)  # the CIFAR pad shortcut
    out = model(torch.randn(2, 3, 6, 16, 16))
    assert out.shape == (2, 3)
    bottleneck = create_model("resnet50", spatial_dims=3, time_kernel=3, stride_in_1x1=True,
                              widths=(8, 8, 8, 8), stem_channels=8)
    assert bottleneck.layer2[0].conv1.stride == (1, 2, 2)
    assert bottleneck.maxpool.kernel_size == (1, 3, 3) and bottleneck.maxpool.stride == (1, 2, 2)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "resnet18", "time_kernel": 3}, "time_kernel is for 3D models"),
    ({"name": "mc3_18", "time_kernel": 3}, "with time_kernel, stem_kernel_size gives the two spatial axes"),
    ({"name": "resnet18", "spatial_dims": 3, "time_kernel": 4}, "time_kernel must be odd"),
    ({"name": "resnet18", "spatial_dims": 3, "time_kernel": {"layer5": 3}}, "time_kernel keys"),
    ({"name": "resnet18", "stem_type": "tiered"}, "stem_type must be one of"),
    ({"name": "resnet18", "stem_type": "deep", "stem_channels": 63}, "even stem_channels"),
    ({"name": "resnet18", "shortcut": "maxpool"}, "shortcut must be one of"),
    ({"name": "resnet18", "attention_init": "zero"}, "attention_init must be one of"),
])
def test_layout_options_are_checked(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)


def test_time_kernel_needs_the_plain_builders():
    from excite.models import Conv3DNoTemporal

    with pytest.raises(ValueError, match="plain ConvNd conv builders"):
        ResNet(excite_blocks.BasicBlock, (1, 1), widths=(8, 8), stem_channels=8, spatial_dims=3,
               conv_builder=Conv3DNoTemporal(), time_kernel=3)


@pytest.mark.parametrize("attention", ["cbam", "se", "eca"])
def test_attention_init_identity_starts_as_the_network_without_attention(attention):
    plain = create_model("resnet18", num_classes=5, widths=(16, 32, 32, 32), stem_channels=16).eval()
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    gated = create_model("resnet18", num_classes=5, widths=(16, 32, 32, 32), stem_channels=16,
                         attention=attention, attention_init="identity").eval()
    report = load_weights_into(gated, plain.state_dict(), exclude=("*.attention.*",))
    assert report.excluded and all(".attention." in k for k in report.excluded)
    assert all(math.isclose(float(m.alpha.detach()), 0.0) for m in gated.modules() if hasattr(m, "alpha"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gated(x), plain(x), rtol=1e-5, atol=1e-6)
