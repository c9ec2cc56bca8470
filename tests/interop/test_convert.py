"""convert_state_dict / load_checkpoint / load_weights_into against re-implementations of
the source networks' forwards (tests/interop/reference_nets.py), float32 to 1e-5."""

from __future__ import annotations

import pickle

import pytest
import torch

import excite
from excite.errors import ExciteError
from excite.interop import (
    SOURCES,
    convert_state_dict,
    load_checkpoint,
    load_weights_into,
    unwrap_checkpoint,
)
from excite.models import create_model

from reference_nets import (
    OfficialBasicBlock,
    OfficialBottleneck,
    OfficialResidualNet,
    OfficialSpatialGate,
    PytorchvideoX3D,
    TimmBasicBlock,
    TimmBottleneck,
    TimmCBAM,
    TimmECA,
    TimmResNet,
    TimmSE,
    TVResNet,
    TVBottleneck,
    official_resnet,
    randomise,
)

WIDTHS = (16, 32, 64, 128)  # small stand-ins for 64 ... 512


def assert_same_logits(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert reference.std() > 0  # a constant output would compare nothing
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())


def _released(state: dict[str, torch.Tensor]) -> dict:
    """The official release's file layout: DataParallel keys under "state_dict"."""
    return {"epoch": 90, "arch": "resnet", "best_prec1": 77.3,
            "state_dict": {f"module.{k}": v for k, v in state.items()}}


def _official(network_type: str, block: str, layers: list[int]) -> torch.nn.Module:
    cls = OfficialBasicBlock if block == "basic" else OfficialBottleneck
    ref = randomise(OfficialResidualNet(network_type, cls, layers, widths=WIDTHS, stem=16, num_classes=10))
    gen = torch.Generator().manual_seed(1)
    for m in ref.modules():  # the official init zeroes this BatchNorm; make it count
        if isinstance(m, OfficialSpatialGate):
            m.spatial.bn.weight.data.copy_(torch.rand(1, generator=gen) + 0.5)
            m.spatial.bn.bias.data.copy_(torch.rand(1, generator=gen) - 0.5)
    return ref.eval()


def _excite_resnet(block: str, layers, **kwargs) -> torch.nn.Module:
    cls = excite.models.BasicBlock if block == "basic" else excite.models.Bottleneck
    return excite.models.ResNet(cls, tuple(layers), widths=WIDTHS, stem_channels=16, num_classes=10,
                                **kwargs).eval()


# a ResNet-18-shaped (2, 2, 2, 2) CIFAR tree and a one-block-per-stage ImageNet bottleneck
# tree at 32 x 32; the released depths are checked key by key at full width below
OFFICIAL_CASES = [("ImageNet", "bottleneck", [1, 1, 1, 1]), ("CIFAR10", "basic", [2, 2, 2, 2])]


@pytest.mark.parametrize(("network_type", "block", "layers"), OFFICIAL_CASES,
                         ids=[f"{t}-{b}-{sum(n)}" for t, b, n in OFFICIAL_CASES])
def test_official_cbam_release_gives_the_official_logits(tmp_path, network_type, block, layers):
    ref = _official(network_type, block, layers)
    path = tmp_path / "RESNET_CBAM.pth.tar"
    torch.save(_released(ref.state_dict()), path)
    cifar = {} if network_type == "ImageNet" else {"stem_kernel_size": 3, "stem_stride": 1, "stem_pool": False}
    ours = _excite_resnet(block, layers, attention="cbam", attention_kwargs={"variant": "official"}, **cifar)
    report = load_weights_into(ours, convert_state_dict(load_checkpoint(path), source="official-cbam"))
    assert len(report.loaded) == len(ours.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_same_logits(ours(x), ref(x))


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_official_cbam_keys_load_strictly_into_the_full_size_model(depth):
    """The released widths (64 ... 512): keys and shapes match create_model exactly."""
    with torch.device("meta"):
        ref = official_resnet("ImageNet", depth, num_classes=1000)
        ours = create_model(f"resnet{depth}", attention="cbam", attention_kwargs={"variant": "official"})
    converted = convert_state_dict(_released(ref.state_dict()), source="official-cbam")
    own = ours.state_dict()
    assert sorted(converted) == sorted(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)


def test_official_cbam_refuses_bam_and_other_keys_in_one_message():
    state = _official("CIFAR10", "basic", [1, 1, 1, 1]).state_dict()
    state["bam1.channel_att.gate_c.fc0.weight"] = torch.zeros(1)
    state["layer1.0.cbam.ChannelGate.mlp.5.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        convert_state_dict(state, source="official-cbam")
    message = str(info.value)
    assert "bam1.channel_att" in message and "mlp.5" in message and "2 key(s)" in message


TIMM_ATTENTION = {
    "se": (TimmSE, {"divisor": 8}),
    "eca": (TimmECA, {}),
    "cbam": (TimmCBAM, {"norm": True, "norm_momentum": 0.1}),
}
TIMM_CASES = [
    ("basic", "se", False), ("bottleneck", "se", False),            # seresnet*
    ("basic", "eca", False), ("bottleneck", "eca", True),           # ecaresnet*, ecaresnet*d
    ("basic", "cbam", False), ("bottleneck", "cbam", True),         # attn_layer="cbam"
    ("basic", None, True),                                          # resnet*d
]


@pytest.mark.parametrize(("block", "attention", "resnet_d"), TIMM_CASES,
                         ids=[f"{b}-{a}-{'d' if d else 'b'}" for b, a, d in TIMM_CASES])
def test_timm_resnets_give_timm_logits(block, attention, resnet_d):
    timm_block = TimmBasicBlock if block == "basic" else TimmBottleneck
    attn, options = TIMM_ATTENTION[attention] if attention else (None, {})
    layers = [1, 1, 1, 1]
    ref = randomise(TimmResNet(timm_block, layers, widths=WIDTHS, stem_width=8 if resnet_d else 16,
                               deep_stem=resnet_d, avg_down=resnet_d, attn=attn)).eval()
    layout = {"stem_type": "deep", "shortcut": "avgpool"} if resnet_d else {}
    ours = _excite_resnet(block, layers, attention=attention, attention_kwargs=options, **layout)
    load_weights_into(ours, convert_state_dict(ref.state_dict(), source="timm"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_same_logits(ours(x), ref(x))


@pytest.mark.parametrize(("name", "attention", "options", "layout"), [
    ("seresnet50", "se", {"divisor": 8}, {}),
    ("ecaresnet50d", "eca", {}, {"stem_type": "deep", "shortcut": "avgpool"}),
])
def test_timm_full_size_layouts_load_strictly(name, attention, options, layout):
    attn = TimmSE if attention == "se" else TimmECA
    resnet_d = bool(layout)
    with torch.device("meta"):
        ref = TimmResNet(TimmBottleneck, [3, 4, 6, 3], stem_width=32 if resnet_d else 64,
                         deep_stem=resnet_d, avg_down=resnet_d, attn=attn, num_classes=1000)
        ours = create_model("resnet50", attention=attention, attention_kwargs=options, **layout)
    converted = convert_state_dict(ref.state_dict(), source="timm")
    own = ours.state_dict()
    assert sorted(converted) == sorted(own), name
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own), name


def test_timm_cbam_spatial_norm_is_batchnorm_with_momentum_0_1():
    ours = create_model("resnet18", attention="cbam", attention_kwargs={"norm": True, "norm_momentum": 0.1})
    norm = ours.layer1[0].attention.spatial.norm
    assert isinstance(norm, torch.nn.BatchNorm2d) and norm.momentum == 0.1
    assert ours.layer1[0].attention.channel.fc1.bias is None


def test_timm_unknown_layers_are_listed():
    state = TimmResNet(TimmBasicBlock, [1, 1, 1, 1], widths=WIDTHS, stem_width=16, attn=TimmSE).state_dict()
    state["layer1.0.se.bn.weight"] = torch.ones(8)  # SE with a norm_layer: not an excite SE
    with pytest.raises(ValueError, match=r"layer1\.0\.se\.bn\.weight"):
        convert_state_dict(state, source="timm")


def test_pytorchvideo_x3d_gives_pytorchvideo_logits_and_fills_the_stage1_shortcut_norm():
    ref = randomise(PytorchvideoX3D(num_classes=10)).eval()
    state = ref.state_dict()
    assert not any(k.startswith("blocks.1.res_blocks.0.branch1_norm") for k in state)
    converted = convert_state_dict({"model_state": state, "epoch": 300}, source="pytorchvideo")
    norm = {k: converted[f"stages.0.0.downsample.1.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    x = torch.randn(2, 24, 3, 5, 5)
    bn = torch.nn.BatchNorm3d(24).eval()
    bn.load_state_dict({**norm, "num_batches_tracked": torch.tensor(0)})
    torch.testing.assert_close(bn(x), x, rtol=1e-6, atol=1e-6)  # the identity
    ours = create_model("x3d_xs", num_classes=10).eval()
    load_weights_into(ours, converted)
    clip = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():  # pytorchvideo's head ends with a softmax; excite leaves it to the loss
        assert_same_logits(ours(clip), ref.logits(clip))


def test_torchvision_source_is_the_torchvision_renaming():
    ref = randomise(TVResNet(TVBottleneck, [1, 1, 1, 1], widths=(8, 8, 16, 16), stem=16)).eval()
    ours = excite.models.ResNet(excite.models.Bottleneck, (1, 1, 1, 1), widths=(8, 8, 16, 16),
                                stem_channels=16, num_classes=10).eval()
    load_weights_into(ours, ref.state_dict(), source="torchvision")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_same_logits(ours(x), ref(x))
    video = {"stem.0.weight": torch.zeros(1), "layer1.0.conv1.0.weight": torch.zeros(1),
             "layer1.0.conv1.1.bias": torch.zeros(1), "layer1.0.attention.fc1.weight": torch.zeros(1)}
    assert sorted(convert_state_dict(video, source="torchvision")) == [
        "conv1.weight", "layer1.0.attention.fc1.weight", "layer1.0.bn1.bias", "layer1.0.conv1.weight"]


def test_unknown_source_lists_the_sources():
    with pytest.raises(ValueError) as info:
        convert_state_dict({}, source="keras")
    for source in SOURCES:
        assert source in str(info.value)


def test_cli_sources_are_the_library_sources():
    from excite.cli import convert as cli_convert

    assert tuple(cli_convert._SOURCES) == SOURCES


# ---------------------------------------------------------------- files and loading


def test_load_checkpoint_reads_safetensors_and_torch_files(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    state = {"a.weight": torch.randn(3, 2), "b.bias": torch.randn(4)}
    st.save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"model_state": state, "epoch": 3}, tmp_path / "w.pyth")
    for name in ("w.safetensors", "w.pyth"):
        loaded = load_checkpoint(tmp_path / name)
        assert sorted(loaded) == sorted(state)
        assert all(torch.equal(loaded[k], state[k]) for k in state)


class _Payload:
    """Anything that is not a tensor or a plain container."""

    def __reduce__(self):  # would run on unpickling if excite unpickled arbitrary objects
        return (print, ("unpickled!",))


def test_load_checkpoint_never_unpickles_objects(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": _Payload()}}, f)
    with pytest.raises(ExciteError, match="evil.pth"):
        load_checkpoint(path)
    assert "unpickled!" not in capsys.readouterr().out


def test_load_checkpoint_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ExciteError, match="bad.pth"):
        load_checkpoint(tmp_path / "bad.pth")


def test_unwrap_strips_dataparallel_and_rejects_non_tensors():
    assert list(unwrap_checkpoint({"module.a": torch.zeros(1), "module.b": torch.zeros(1)})) == ["a", "b"]
    with pytest.raises(TypeError, match="epoch"):
        unwrap_checkpoint({"epoch": 3, "w": torch.zeros(1)})


def test_load_weights_into_is_all_or_nothing_with_one_message():
    model = create_model("resnet18", num_classes=10, widths=WIDTHS, stem_channels=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = dict(create_model("resnet18", num_classes=5, widths=WIDTHS, stem_channels=16).state_dict())
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    del state["layer1.0.bn1.running_var"]
    with pytest.raises(ValueError) as info:
        load_weights_into(model, state)
    message = str(info.value)
    assert "layer9.0.conv1.weight" in message and "layer1.0.bn1.running_var" in message
    assert "fc.weight: checkpoint (5, 128) vs model (10, 128)" in message
    assert "\n" not in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_load_weights_into_exclude_starts_a_new_head():
    source = create_model("resnet18", num_classes=5, widths=WIDTHS, stem_channels=16)
    model = create_model("resnet18", num_classes=10, widths=WIDTHS, stem_channels=16)
    head = model.fc.weight.detach().clone()
    report = load_weights_into(model, source.state_dict(), exclude=("fc.*",))
    assert set(report.excluded) == {"fc.weight", "fc.bias"}
    assert torch.equal(model.fc.weight, head)
    assert torch.equal(model.layer2[0].conv1.weight, source.layer2[0].conv1.weight)


# ---------------------------------------------------------------- the real libraries


@pytest.mark.parametrize(("timm_name", "excite_name", "attention", "options", "layout"), [
    ("seresnet18", "resnet18", "se", {"divisor": 8}, {}),
    ("ecaresnet50d", "resnet50", "eca", {}, {"stem_type": "deep", "shortcut": "avgpool"}),
])
def test_real_timm_resnets(timm_name, excite_name, attention, options, layout):
    timm = pytest.importorskip("timm")
    ref = randomise(timm.create_model(timm_name, pretrained=False, num_classes=10)).eval()
    ours = create_model(excite_name, attention=attention, attention_kwargs=options, num_classes=10, **layout).eval()
    load_weights_into(ours, ref.state_dict(), source="timm")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_same_logits(ours(x), ref(x))


def test_real_pytorchvideo_x3d():
    x3d = pytest.importorskip("pytorchvideo.models.x3d")
    ref = randomise(x3d.create_x3d(input_clip_length=4, input_crop_size=32, model_num_class=10)).eval()
    ours = create_model("x3d_xs", num_classes=10).eval()
    load_weights_into(ours, ref.state_dict(), source="pytorchvideo")
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():  # pytorchvideo's head ends with a softmax
        torch.testing.assert_close(ours(clip).softmax(1), ref(clip), rtol=1e-5, atol=1e-6)
