"""Structure of the rank-generic ResNet: attention placement, stages, strides, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from excite.models import BasicBlock, Bottleneck, ResNet, create_model, list_models
from excite.profiling import profile


def _capture(module: nn.Module, store: dict, key: str) -> None:
    def hook(mod, args, output):
        store[key + "_in"] = args[0].detach().clone()
        store[key + "_out"] = output.detach().clone()

    module.register_forward_hook(hook)


def _tiny(position: str, spatial_dims: int = 2, block=BasicBlock) -> ResNet:
    model = ResNet(
        block, (1, 1), widths=(8, 16), stem_channels=8, stem_kernel_size=3,
        stem_pool=False, spatial_dims=spatial_dims, num_classes=3,
        attention="se", attention_kwargs={"reduction": 4}, attention_position=position,
    )
    model.eval()
    # non-trivial BatchNorm statistics so a misplaced module would change numbers
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity"])
def test_attention_position_wires_the_graph_as_in_senet_fig5(position, spatial_dims):
    model = _tiny(position, spatial_dims)
    block = model.layer2[0]  # stride 2, projection shortcut: 8 -> 16 channels
    rec: dict = {}
    for name in ("attention", "conv1", "bn2", "downsample"):
        _capture(getattr(block, name), rec, name)
    _capture(block, rec, "block")
    x = torch.randn(2, 3, *(8,) * spatial_dims)
    with torch.no_grad():
        model(x)
    x_in = rec["block_in"]
    relu = torch.relu
    if position == "standard":
        # attention gates the last BN output; identity path untouched
        assert torch.equal(rec["attention_in"], rec["bn2_out"])
        assert torch.equal(rec["conv1_in"], x_in)
        expected = relu(rec["attention_out"] + rec["downsample_out"])
    elif position == "pre":
        # attention on the block input, feeding the residual branch only
        assert torch.equal(rec["attention_in"], x_in)
        assert torch.equal(rec["conv1_in"], rec["attention_out"])
        assert torch.equal(rec["downsample_in"], x_in)
        expected = relu(rec["bn2_out"] + rec["downsample_out"])
    elif position == "post":
        # after the addition and ReLU
        assert torch.equal(rec["attention_in"], relu(rec["bn2_out"] + rec["downsample_out"]))
        expected = rec["attention_out"]
    else:
        # on the identity branch; the residual branch is left untouched
        assert torch.equal(rec["attention_in"], rec["downsample_out"])
        assert torch.equal(rec["conv1_in"], x_in)
        expected = relu(rec["bn2_out"] + rec["attention_out"])
    torch.testing.assert_close(rec["block_out"], expected, rtol=0, atol=0)


def test_pre_attention_works_on_the_block_input_width():
    model = _tiny("pre", block=Bottleneck)
    # layer2[0] takes 8*4 = 32 channels in and gives 16*4 = 64 out: "pre" gates the input
    fc1 = [m for m in model.layer2[0].attention.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    widths = {m.in_features if isinstance(m, nn.Linear) else m.in_channels for m in fc1}
    assert 32 in widths and 64 not in widths
    std = _tiny("standard", block=Bottleneck)
    fc1 = [m for m in std.layer2[0].attention.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert 64 in {m.in_features if isinstance(m, nn.Linear) else m.in_channels for m in fc1}


def test_attention_stages_puts_se_in_the_six_1024_channel_blocks_of_resnet50():
    with torch.device("meta"):
        model = create_model("resnet50", attention="se", attention_stages=(3,))
    for index, stage in enumerate(model.stages(), start=1):
        for block in stage:
            has = not isinstance(block.attention, nn.Identity)
            assert has == (index == 3)
    assert len(model.layer3) == 6
    # SE(1024, r=16) with biases: 2*1024*64 + 64 + 1024 parameters per block
    extra = sum(p.numel() for p in model.parameters()) - 25_557_032
    assert extra == 6 * (2 * 1024 * 64 + 64 + 1024)


@pytest.mark.parametrize("stages", [(0,), (5,), ()])
def test_attention_stages_out_of_range_raise(stages):
    with pytest.raises((ValueError, TypeError), match="attention_stages"):
        create_model("resnet18", attention="se", attention_stages=stages)


@pytest.mark.parametrize("stride_in_1x1", [False, True])
def test_stride_in_1x1_moves_the_bottleneck_stride(stride_in_1x1):
    with torch.device("meta"):
        model = create_model("resnet50", stride_in_1x1=stride_in_1x1)
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0]
        assert first.conv1.stride == ((2, 2) if stride_in_1x1 else (1, 1))
        assert first.conv2.stride == ((1, 1) if stride_in_1x1 else (2, 2))
        assert first.downsample[0].stride == (2, 2)


def test_resnext_grouped_width():
    with torch.device("meta"):
        model = create_model("resnext50_32x4d")
    # C x d = 32 x 4 = 128 in stage 1, doubling per stage
    assert [s[0].conv2.out_channels for s in model.stages()] == [128, 256, 512, 1024]
    assert all(s[0].conv2.groups == 32 for s in model.stages())


def test_default_init_kaiming_fan_out_and_bn():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10)
    conv = model.layer3[1].conv1  # 256 -> 256, 3x3: fan_out = 256 * 9
    expected_std = math.sqrt(2.0 / (256 * 9))
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.02)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_zero_init_residual_makes_identity_blocks_relu():
    model = create_model(
        "resnet18", num_classes=4, zero_init_residual=True, attention="cbam"
    )
    model.eval()
    for stage in model.stages():
        for block in stage:
            assert torch.all(block.bn2.weight == 0)
    block = model.layer1[1]  # identity shortcut
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        # residual branch output is bn2 bias (0) gated by attention -> 0, so out = relu(x)
        torch.testing.assert_close(block(x), torch.relu(x))


def test_official_cbam_zero_inits_the_spatial_batchnorm():
    from excite.layers import SpatialAttention

    model = create_model("resnet18", attention="cbam", attention_kwargs={"variant": "official"})
    norms = [
        n for m in model.modules() if isinstance(m, SpatialAttention)
        for n in m.modules() if isinstance(n, nn.BatchNorm2d)
    ]
    assert len(norms) == 8
    assert all(torch.all(n.weight == 0) for n in norms)
    # the backbone's BatchNorms keep gamma = 1
    assert torch.all(model.layer1[0].bn2.weight == 1)


def test_pad_shortcut_is_subsample_and_zero_channels():
    model = create_model("resnet20", num_classes=10)
    shortcut = model.layer2[0].downsample
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    sub = x[:, :, ::2, ::2]
    torch.testing.assert_close(out[:, 8:24], sub)
    assert torch.all(out[:, :8] == 0) and torch.all(out[:, 24:] == 0)
    assert sum(p.numel() for p in shortcut.parameters()) == 0


@pytest.mark.parametrize("name", list_models())
def test_conv_parameter_rule_over_every_conv_of_every_model(name):
    """Conv params = C_in/groups * K * prod(kernel) (+ K bias), also in the profile rows.

    CBAM brings the attention's own convolutions (the k^d spatial conv) into the check;
    ECA's 1D conv across channels is checked on the small models.
    """
    attentions = ["cbam"] + (["eca"] if name in ("resnet20", "tiny_resnet", "x3d_xs") else [])
    checked = 0
    for attention in attentions:
        with torch.device("meta"):
            model = create_model(name, attention=attention, num_classes=7)
        shape = (2, model.in_channels, *(16,) * model.spatial_dims)
        rows = {r.name: r for r in profile(model, shape).layers}
        for qual, m in model.named_modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                expected = (m.in_channels // m.groups) * m.out_channels * math.prod(
                    m.kernel_size
                ) + (m.out_channels if m.bias is not None else 0)
                assert sum(p.numel() for p in m.parameters()) == expected, qual
                assert rows[qual].params == expected, qual
                checked += 1
    assert checked >= 10


def test_video_3d_conv_holds_27_c_k_weights():
    with torch.device("meta"):
        model = create_model("r3d_18", num_classes=10)
    conv = model.layer2[1].conv1
    assert conv.kernel_size == (3, 3, 3)
    assert conv.weight.numel() == 27 * 128 * 128


def test_r2plus1d_midplanes_follow_torchvision_rule():
    with torch.device("meta"):
        model = create_model("r2plus1d_18", num_classes=10)
    # block (64 -> 128): M = 64*128*27 // (64*9 + 3*128) = 230, shared by both convs
    block = model.layer2[0]
    assert block.conv1[0].out_channels == 230 and block.conv2[0].out_channels == 230
    assert block.conv1[0].kernel_size == (1, 3, 3) and block.conv1[3].kernel_size == (3, 1, 1)
    assert block.conv1[0].stride == (1, 2, 2) and block.conv1[3].stride == (2, 1, 1)
    assert model.layer1[0].conv1[0].out_channels == 64 * 64 * 27 // (64 * 9 + 3 * 64)


def test_mc3_uses_3d_convs_in_stage_1_only():
    with torch.device("meta"):
        model = create_model("mc3_18", num_classes=10)
    assert model.layer1[0].conv1.kernel_size == (3, 3, 3)
    for stage in (model.layer2, model.layer3, model.layer4):
        assert stage[0].conv1.kernel_size == (1, 3, 3)
        assert stage[0].downsample[0].stride == (1, 2, 2)
    assert model.conv1.kernel_size == (3, 7, 7) and model.conv1.stride == (1, 2, 2)
    assert isinstance(model.maxpool, nn.Identity)


@pytest.mark.parametrize("spatial_dims", [1, 3])
def test_generic_resnet_other_ranks_use_cubic_kernels(spatial_dims):
    with torch.device("meta"):
        model = create_model("resnet18", spatial_dims=spatial_dims)
    assert model.conv1.kernel_size == (7,) * spatial_dims
    assert model.layer2[0].conv1.kernel_size == (3,) * spatial_dims
    assert model.layer2[0].conv1.stride == (2,) * spatial_dims


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"attention_position": "middle"}, "attention_position"),
    ({"attention": 3}, "attention"),
    ({"attention_kwargs": {"reduction": 4}}, "attention_kwargs"),
    ({"attention": "se", "attention_kwargs": [1]}, "attention_kwargs"),
    ({"num_classes": 0}, "num_classes"),
    ({"in_channels": 1.5}, "in_channels"),
    ({"spatial_dims": 4}, "spatial_dims"),
    ({"no_such_option": 1}, "no_such_option"),
])
def test_invalid_arguments_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        create_model("resnet18", **kwargs)


def test_forward_checks_rank_and_channels():
    model = create_model("tiny_resnet", in_channels=1, spatial_dims=3, num_classes=2)
    with pytest.raises(ValueError, match=r"\(N, 1, T, H, W\)"):
        model(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="1 input channels"):
        model(torch.randn(2, 3, 4, 16, 16))
