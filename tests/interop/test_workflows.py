"""The three workflows of docs/interop.md on small inputs, and ``excite convert``.

(a) torchvision r3d_18 -> attach CBAM (identity init) -> weights for ``excite train
    --init-from``: the library half (``load_weights_into``, what the flag runs) is tested
    here; the flag itself is wired in excite.cli.train.
(b) 2D SE-ResNet -> inflate -> ``excite train`` on moving-shapes: the inflated weights load
    into the model ``excite train --model-option time_kernel=3`` builds, and that command
    trains.
(c) official CBAM checkpoint -> ``excite convert`` -> ``excite eval``: end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import excite
from excite.cli import main
from excite.interop import attach_attention, inflate, load_weights_into
from excite.models import create_model

from reference_nets import OfficialBasicBlock, OfficialResidualNet, OfficialSpatialGate, TVVideoResNet, randomise

st = pytest.importorskip("safetensors.torch")

SMALL_VIDEO = (16, 16, 32, 32)  # widths of a small r3d_18 (torchvision's are 64 ... 512)


def _error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_workflow_a_attached_torchvision_r3d_loads_into_the_excite_model(tmp_path):
    tv_model = randomise(TVVideoResNet(kind="r3d", widths=SMALL_VIDEO, num_classes=400)).eval()
    clip = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        before = tv_model(clip)
    report = attach_attention(tv_model, "cbam", init="identity")
    assert len(report.inserted) == 8
    path = tmp_path / "r3d18-cbam.safetensors"
    st.save_file({k: v.contiguous() for k, v in tv_model.state_dict().items()}, str(path))
    # what `excite train --model r3d_18 --attention cbam --model-option attention_init=identity
    # --init-from r3d18-cbam.safetensors` builds and fills
    ours = create_model("r3d_18", attention="cbam", attention_init="identity", num_classes=400,
                        widths=SMALL_VIDEO, stem_channels=SMALL_VIDEO[0]).eval()
    load_weights_into(ours, path, source="torchvision")
    with torch.no_grad():
        torch.testing.assert_close(ours(clip), before, rtol=1e-5, atol=1e-6)
    # a new head for the fine-tuning data
    head = create_model("r3d_18", attention="cbam", attention_init="identity", num_classes=4,
                        widths=SMALL_VIDEO, stem_channels=SMALL_VIDEO[0])
    report = load_weights_into(head, path, source="torchvision", exclude=("fc.*",))
    assert set(report.excluded) == {"fc.weight", "fc.bias"}


TINY = ["--data-option", "train_size=8", "--data-option", "val_size=4", "--data-option", "size=16x16",
        "--data-option", "radius=2,3", "--data-option", "frames=4", "--batch-size", "4", "--quiet",
        "--device", "cpu"]
SMALL_2D = ["--model-option", "widths=[8,8,16,16]", "--model-option", "stem_channels=8"]


def test_workflow_b_inflated_se_resnet_trains_on_moving_shapes(tmp_path, capsys):
    model_2d = create_model("resnet18", attention="se", attention_kwargs={"reduction": 4},
                            in_channels=1, num_classes=4, widths=(8, 8, 16, 16), stem_channels=8)
    model_3d = inflate(model_2d, time_kernel=3, method="mean").eval()
    path = tmp_path / "se-resnet18-3d.safetensors"
    st.save_file({k: v.contiguous() for k, v in model_3d.state_dict().items()}, str(path))
    # `excite train --model resnet18 --attention se --spatial-dims 3 --model-option time_kernel=3
    #  --init-from se-resnet18-3d.safetensors` builds this model and fills it:
    built = create_model("resnet18", attention="se", attention_kwargs={"reduction": 4}, in_channels=1,
                         num_classes=4, spatial_dims=3, time_kernel=3, widths=(8, 8, 16, 16),
                         stem_channels=8).eval()
    load_weights_into(built, path)
    clip = torch.randn(2, 1, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(built(clip), model_3d(clip), rtol=1e-5, atol=1e-6)
    # ... and trains it on moving-shapes
    assert main(["train", "--model", "resnet18", "--attention", "se", "--attention-option", "reduction=4",
                 "--spatial-dims", "3", "--model-option", "time_kernel=3", *SMALL_2D, "--epochs", "1",
                 "--out", str(tmp_path), "--name", "inflated", *TINY]) == 0
    assert "validation accuracy:" in capsys.readouterr().out
    saved = st.load_file(str(tmp_path / "inflated" / "best.safetensors"))
    assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in built.state_dict().items()}


def _official_cifar(classes: int) -> torch.nn.Module:
    ref = randomise(OfficialResidualNet("CIFAR10", OfficialBasicBlock, [2, 2, 2, 2], widths=(16, 32, 32, 32),
                                        stem=16, num_classes=classes))
    for m in ref.modules():
        if isinstance(m, OfficialSpatialGate):
            m.spatial.bn.weight.data.fill_(1.2)
    with torch.no_grad():
        ref.fc.bias.copy_(torch.tensor([0.3, -0.2, 0.1][:classes]))
    return ref.eval()


def _image_folder(root: Path, classes: list[str], per_class: int) -> None:
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
                pixels[..., c] = np.clip(pixels[..., c].astype(int) + 60 * i, 0, 255)
                pil.fromarray(pixels).save(folder / f"{i}.png")


def _reference_confusion(ref: torch.nn.Module, root: Path, classes: list[str]) -> np.ndarray:
    pil = pytest.importorskip("PIL.Image")
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for c, name in enumerate(classes):
        for path in sorted((root / "val" / name).glob("*.png")):
            x = torch.from_numpy(np.array(pil.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
            with torch.no_grad():
                confusion[c, int(ref(x.unsqueeze(0)).argmax())] += 1
    return confusion


OFFICIAL_FLAGS = ["--source", "official-cbam", "--model", "resnet18", "--attention", "cbam",
                  "--attention-option", "variant=official", "--model-option", "widths=[16,32,32,32]",
                  "--model-option", "stem_channels=16", "--model-option", "stem_kernel_size=3",
                  "--model-option", "stem_stride=1", "--model-option", "stem_pool=false"]


def test_workflow_c_official_cbam_checkpoint_converts_and_evaluates(tmp_path, capsys):
    classes = ["a", "b", "c"]
    ref = _official_cifar(len(classes))
    checkpoint = tmp_path / "RESNET18_CIFAR_CBAM.pth.tar"
    torch.save({"epoch": 200, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, checkpoint)
    data = tmp_path / "images"
    _image_folder(data, classes, per_class=3)
    run_dir = tmp_path / "runs" / "official-cbam18"
    assert main(["convert", str(checkpoint), *OFFICIAL_FLAGS, "--data", "image-folder", "--data-dir", str(data),
                 "--data-option", "normalize=none", "--out", str(run_dir)]) == 0
    assert "excite eval" in capsys.readouterr().out
    assert main(["eval", str(run_dir), "--device", "cpu"]) == 0
    reports = Path(capsys.readouterr().out.rsplit("reports written to ", 1)[1].strip())
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["num_samples"] == 9
    confusion = np.loadtxt(reports / "confusion.csv", delimiter=",", skiprows=1, usecols=range(1, 4), dtype=int)
    np.testing.assert_array_equal(confusion, _reference_confusion(ref, data, classes))


def test_convert_to_safetensors_and_its_errors(tmp_path, capsys):
    ref = _official_cifar(3)
    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"state_dict": ref.state_dict()}, checkpoint)
    out = tmp_path / "cbam18.safetensors"
    assert main(["convert", str(checkpoint), *OFFICIAL_FLAGS, "--out", str(out)]) == 0
    assert "converted" in capsys.readouterr().out
    weights = st.load_file(str(out))
    assert weights["fc.weight"].shape == (3, 32) and "layer1.0.attention.spatial.norm.weight" in weights
    # never overwritten
    assert "already exists" in _error(capsys, ["convert", str(checkpoint), *OFFICIAL_FLAGS, "--out", str(out)])
    # the wrong model: one line naming the keys that do not fit
    err = _error(capsys, ["convert", str(checkpoint), "--source", "official-cbam", "--model", "resnet18",
                          "--out", str(tmp_path / "x.safetensors")])
    assert "attention" in err and "not in the model" in err
    # a run directory needs --data; a missing file is one line
    assert "--data" in _error(capsys, ["convert", str(checkpoint), *OFFICIAL_FLAGS, "--out", str(tmp_path / "run")])
    assert "not found" in _error(capsys, ["convert", str(tmp_path / "none.pth"), *OFFICIAL_FLAGS,
                                           "--out", str(tmp_path / "y.safetensors")])
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "run").exists()


def test_public_api():
    assert excite.inflate is inflate and excite.convert_state_dict is excite.interop.convert_state_dict
