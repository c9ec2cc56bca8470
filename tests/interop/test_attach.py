"""attach_attention on torchvision-, timm- and excite-shaped networks built by hand
(tests/interop/reference_nets.py), plus the real libraries when they are installed."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import excite
from excite.interop import AttachReport, attach_attention, convert_state_dict, find_residual_blocks
from excite.models import create_model
from excite.models.resnet import ScaledAttention

from reference_nets import (
    TimmBasicBlock,
    TimmResNet,
    TimmSE,
    TVBasicBlock,
    TVBottleneck,
    TVResNet,
    TVVideoResNet,
    randomise,
)

# registered at test time, so families added later are covered too
FAMILIES = excite.list_attention()


def _tv(block=TVBasicBlock, layers=(1, 1), widths=(32, 32)) -> nn.Module:
    return randomise(TVResNet(block, list(layers), widths=widths, stem=32)).eval()


TREES = {  # name -> (build, input shape)
    "torchvision": (lambda: _tv(), (2, 3, 16, 16)),
    "torchvision-bottleneck": (lambda: _tv(TVBottleneck, (1, 1), (16, 16)), (2, 3, 32, 32)),
    "torchvision-r3d": (lambda: TVVideoResNet(kind="r3d", widths=(16, 16, 32, 32)), (1, 3, 4, 16, 16)),
    "torchvision-r2plus1d": (lambda: TVVideoResNet(kind="r2plus1d", widths=(16, 16, 32, 32)),
                             (1, 3, 4, 16, 16)),
    "timm": (lambda: TimmResNet(TimmBasicBlock, [1, 1], widths=(32, 32), stem_width=32), (2, 3, 32, 32)),
    "excite": (lambda: excite.models.ResNet(excite.models.BasicBlock, (1, 1), widths=(32, 32),
                                            stem_channels=32, num_classes=10), (2, 3, 32, 32)),
}


def _tree(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    build, shape = TREES[name]
    return randomise(build()).eval(), shape


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str], int]:
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [n for n, _ in model.named_modules()], hooks)


def _assert_unchanged(model: nn.Module, snapshot) -> None:
    state, names, hooks = snapshot
    now = _snapshot(model)
    assert now[1] == names and now[2] == hooks
    assert sorted(now[0]) == sorted(state) and all(torch.equal(now[0][k], v) for k, v in state.items())


@pytest.mark.parametrize("family", FAMILIES)
def test_identity_init_keeps_eval_logits_for_every_family(family):
    """Random weights, non-trivial BatchNorm statistics: logits before == after."""
    model, shape = _tree("torchvision")  # the forward-hook path; the slots: next test
    x = torch.randn(shape)
    with torch.no_grad():
        before = model(x)
    report = attach_attention(model, family, init="identity")
    assert report.inserted and all(isinstance(model.get_submodule(i.name), ScaledAttention)
                                   for i in report.inserted)
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())


LAYOUTS = [("timm", "se"), ("timm", "cbam"), ("excite", "cbam"), ("torchvision-bottleneck", "cbam"),
           ("torchvision-r3d", "cbam"), ("torchvision-r2plus1d", "eca")]


@pytest.mark.parametrize(("tree", "family"), LAYOUTS, ids=[f"{t}-{f}" for t, f in LAYOUTS])
def test_identity_init_on_every_block_layout(tree, family):
    model, shape = _tree(tree)
    x = torch.randn(shape)
    with torch.no_grad():
        before = model(x)
    report = attach_attention(model, family, init="identity")
    rank = len(shape) - 2
    assert {i.spatial_dims for i in report.inserted} == {rank}
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5 * before.abs().max().item())
    # the attention is really on the path: alpha = 1 is the plain attention module
    for insertion in report.inserted:
        model.get_submodule(insertion.name).alpha.data.fill_(1.0)
    with torch.no_grad():
        assert not torch.allclose(model(x), before, rtol=1e-3, atol=1e-4)


def test_default_init_keeps_every_existing_key_and_value():
    model = _tv(layers=(2, 2))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    report = attach_attention(model, "cbam")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in original.items())
    new = sorted(set(state) - set(original))
    assert new and all(k.split(".")[2] == "attention" for k in new)
    # torchvision's BasicBlock now computes bn2 -> CBAM -> + identity
    with torch.no_grad():
        assert not torch.allclose(model(x), before)
    # pretrained weights load before or after, with only the attention keys reported missing
    result = model.load_state_dict(original, strict=False)
    assert sorted(result.missing_keys) == new and result.unexpected_keys == []
    assert [(i.name, i.after, i.channels, i.spatial_dims) for i in report.inserted] == [
        ("layer1.0.attention", "layer1.0.bn2", 32, 2), ("layer1.1.attention", "layer1.1.bn2", 32, 2),
        ("layer2.0.attention", "layer2.0.bn2", 32, 2), ("layer2.1.attention", "layer2.1.bn2", 32, 2)]
    assert report.parameters == sum(p.numel() for k, p in model.named_parameters() if ".attention." in k)
    assert "layer2.1.attention" in str(report)


def test_attached_torchvision_network_is_an_excite_network_with_that_attention():
    """Same keys as create_model(name, attention=...), so its weights load there."""
    widths = (16, 16, 32, 32)
    ref = randomise(TVResNet(TVBasicBlock, [2, 2, 2, 2], widths=widths, stem=16)).eval()
    attach_attention(ref, "cbam", attention_kwargs={"variant": "official"})
    ours = create_model("resnet18", attention="cbam", attention_kwargs={"variant": "official"},
                        widths=widths, stem_channels=16, num_classes=10).eval()
    ours.load_state_dict(convert_state_dict(ref.state_dict(), source="torchvision"), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


def test_video_blocks_follow_the_norm_inside_conv2():
    model, _ = _tree("torchvision-r2plus1d")
    report = attach_attention(model, "sam")
    assert report.inserted[0].after == "layer1.0.conv2.1"
    assert {i.spatial_dims for i in report.inserted} == {3}


def test_timm_blocks_use_their_se_slot_and_refuse_a_second_attention():
    model = TimmResNet(TimmBasicBlock, [1, 1], widths=(32, 32), stem_width=32)
    report = attach_attention(model, "eca")
    assert [i.name for i in report.inserted] == ["layer1.0.se", "layer2.0.se"]
    assert isinstance(model.layer1[0].se, excite.ECA)
    seresnet = TimmResNet(TimmBasicBlock, [1, 1], widths=(32, 32), stem_width=32, attn=TimmSE)
    snapshot = _snapshot(seresnet)
    with pytest.raises(ValueError, match="already has attention at layer1.0.se"):
        attach_attention(seresnet, "cbam")
    _assert_unchanged(seresnet, snapshot)


def test_stage_family_goes_once_at_the_end_of_each_stage():
    class StageGate(nn.Module):
        attention_placement = "stage"

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.full((channels,), 2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale.view(1, -1, 1, 1)

    model = _tv(layers=(2, 1))
    x = torch.randn(1, 3, 32, 32)
    stage_in = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    report = attach_attention(model, StageGate)
    assert [i.name for i in report.inserted] == ["layer1.attention", "layer2.attention"]
    assert list(model.layer1._modules) == ["0", "1", "attention"]
    with torch.no_grad():
        torch.testing.assert_close(model.layer1(stage_in), 2 * model.layer1[1](model.layer1[0](stage_in)))


def test_where_pattern_and_predicate_insert_after_the_matched_modules():
    model = _tv()
    report = attach_attention(model, "se", where="layer*.0.conv1")
    assert [(i.name, i.after, i.channels) for i in report.inserted] == [
        ("layer1.0.conv1.attention", "layer1.0.conv1", 32), ("layer2.0.conv1.attention", "layer2.0.conv1", 32)]
    x = torch.randn(1, 32, 8, 8)
    conv = model.layer1[0].conv1
    with torch.no_grad():
        torch.testing.assert_close(conv(x), conv.attention(conv._conv_forward(x, conv.weight, conv.bias)))
    other = _tv()
    picked = attach_attention(other, "cam", where=lambda name, m: isinstance(m, nn.Sequential) and name == "layer2")
    assert [i.name for i in picked.inserted] == ["layer2.attention"]
    assert list(other.layer2._modules)[-1] == "attention"


def test_deepcopy_carries_the_hooks_to_the_copy():
    model = _tv()
    attach_attention(model, "cbam", init="identity")
    twin = copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        for m in twin.modules():
            if isinstance(m, ScaledAttention):
                m.alpha.data.fill_(1.0)
        assert not torch.allclose(twin(x), before)
        torch.testing.assert_close(model(x), before)


def test_new_modules_follow_dtype_and_mode_and_train():
    """torchvision's ``out += identity`` runs in place on the attention's output."""
    model = _tv().double().train()
    attach_attention(model, "cbam")
    attention = model.layer1[0].attention
    assert attention.channel.fc1.weight.dtype == torch.float64 and attention.training
    model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).sum().backward()
    assert attention.channel.fc1.weight.grad is not None and attention.spatial.conv.weight.grad is not None


def test_find_residual_blocks_by_structure():
    kinds = {b.name: (b.kind, b.slot) for b in find_residual_blocks(_tree("timm")[0])}
    assert kinds == {"layer1.0": ("timm", "se"), "layer2.0": ("timm", "se")}
    kinds = {b.kind for b in find_residual_blocks(create_model("resnet18"))}
    assert kinds == {"excite"}


# ------------------------------------------------------------------ errors, model unchanged


def test_attaching_twice_is_refused_and_changes_nothing():
    model = _tv()
    attach_attention(model, "cbam")
    snapshot = _snapshot(model)
    with pytest.raises(ValueError, match="already has attention at layer1.0.attention"):
        attach_attention(model, "se")
    _assert_unchanged(model, snapshot)
    built = create_model("resnet18", attention="se")
    with pytest.raises(ValueError, match="already has attention"):
        attach_attention(built, "cbam")


def test_a_model_without_residual_blocks_is_refused():
    plain = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU())
    snapshot = _snapshot(plain)
    with pytest.raises(ValueError, match="found no residual blocks in Sequential"):
        attach_attention(plain, "cbam")
    _assert_unchanged(plain, snapshot)
    report = attach_attention(plain, "cbam", where="1")  # after the BatchNorm, by name
    assert report.inserted[0].channels == 32
    assert plain(torch.randn(1, 3, 8, 8)).shape == (1, 32, 6, 6)


def test_a_pattern_that_matches_nothing_is_refused():
    model = _tv()
    snapshot = _snapshot(model)
    with pytest.raises(ValueError, match=r"where='features\.\*' matched no module"):
        attach_attention(model, "cbam", where="features.*")
    _assert_unchanged(model, snapshot)


def test_a_build_error_in_a_later_block_leaves_the_model_unchanged():
    model = _tv(widths=(64, 16))  # SE with r=32: 64 // 32 = 2 hidden channels, 16 // 32 = 0
    snapshot = _snapshot(model)
    with pytest.raises(ValueError, match="reduction"):
        attach_attention(model, "se", attention_kwargs={"reduction": 32})
    _assert_unchanged(model, snapshot)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"attention": "none"}, ValueError, "nothing to attach"),
    ({"attention": None}, ValueError, "nothing to attach"),
    ({"attention": "cbamm"}, ValueError, "attention name must be one of"),
    ({"attention": "cbam", "init": "zero"}, ValueError, "init must be one of"),
    ({"attention": "cbam", "where": 3}, TypeError, "where must be 'residual'"),
    ({"attention": "cbam", "attention_kwargs": {"reduce": 4}}, TypeError, "unexpected keyword argument 'reduce'"),
])
def test_bad_arguments_are_one_clear_error(kwargs, error, match):
    model = _tv()
    snapshot = _snapshot(model)
    with pytest.raises(error, match=match):
        attach_attention(model, **kwargs)
    _assert_unchanged(model, snapshot)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        attach_attention("resnet18", "cbam")


def test_public_names():
    assert excite.attach_attention is attach_attention and excite.AttachReport is AttachReport


# ------------------------------------------------------------------ the real libraries


def test_real_torchvision_models():
    tv = pytest.importorskip("torchvision")
    for build, shape in ((tv.models.resnet18, (1, 3, 64, 64)), (tv.models.video.r3d_18, (1, 3, 4, 32, 32))):
        model = randomise(build(weights=None, num_classes=10)).eval()
        x = torch.randn(shape)
        with torch.no_grad():
            before = model(x)
        report = attach_attention(model, "cbam", init="identity")
        assert len(report.inserted) == 8
        with torch.no_grad():
            torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_real_timm_model():
    timm = pytest.importorskip("timm")
    model = randomise(timm.create_model("resnet18", pretrained=False, num_classes=10)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    report = attach_attention(model, "se", init="identity")
    assert all(i.name.endswith(".se") for i in report.inserted)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
