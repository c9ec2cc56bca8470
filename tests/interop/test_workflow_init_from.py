"""Workflow (a) of docs/interop.md end to end, on small inputs: torchvision r3d_18 -> CBAM
attached with identity init -> ``excite convert`` -> ``excite train --init-from``.

The torchvision network is the hand-built reference of reference_nets.py at small widths
(torchvision's are 64 ... 512) and the fine-tuning data are a folder of 8x8 frame clips
with two classes, so the Kinetics head (400 classes) is left out with ``--init-exclude
'fc.*'`` as the docs say. The reference for "the run started from the file" is the
converted file itself: with a learning rate of 1e-12 one epoch moves no parameter by more
than 1e-9, so the trained weights must still equal the file's (BatchNorm's running
statistics do move, and the new head is the model's own).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from excite.cli import main
from excite.interop import attach_attention

from reference_nets import TVVideoResNet, randomise

st = pytest.importorskip("safetensors.torch")
pil = pytest.importorskip("PIL.Image")

SMALL = ["--model-option", "widths=[16,16,32,32]", "--model-option", "stem_channels=16"]
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _clips(root: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 4) -> None:
    """DATA_DIR/<class>/<clip>/frame*.png, 4 frames of 8x8 RGB each."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        for k in range(per_class):
            clip = root / name / f"clip{k}"
            clip.mkdir(parents=True)
            for t in range(4):
                pixels = rng.integers(0, 200, size=(8, 8, 3), dtype=np.uint8)
                pixels[..., c] += 50
                pil.fromarray(pixels).save(clip / f"frame{t}.png")


@pytest.fixture(autouse=True)
def no_curves(monkeypatch) -> None:
    from excite.engine.rundir import RunDirectory

    monkeypatch.setattr(RunDirectory, "save_curves", lambda self, *args, **kwargs: None)  # not tested here


def test_workflow_a_attach_convert_and_fine_tune_with_init_from(tmp_path: Path, capsys) -> None:
    # python: the Kinetics model (here: random weights), CBAM attached as the identity, saved
    tv_model = randomise(TVVideoResNet(kind="r3d", widths=(16, 16, 32, 32), num_classes=400)).eval()
    assert len(attach_attention(tv_model, "cbam", init="identity").inserted) == 8
    attached = tmp_path / "r3d18-cbam.safetensors"
    st.save_file({k: v.contiguous() for k, v in tv_model.state_dict().items()}, str(attached))
    # excite convert r3d18-cbam.safetensors --source torchvision --model r3d_18 --attention cbam
    #     --model-option attention_init=identity --out r3d18-cbam-excite.safetensors
    converted = tmp_path / "r3d18-cbam-excite.safetensors"
    assert main(["convert", str(attached), "--source", "torchvision", "--model", "r3d_18", "--attention", "cbam",
                 "--model-option", "attention_init=identity", *SMALL, "--out", str(converted)]) == 0
    # excite train --model r3d_18 --attention cbam --model-option attention_init=identity
    #     --init-from r3d18-cbam-excite.safetensors --init-exclude 'fc.*' --data video-folder --data-dir clips/
    clips = tmp_path / "clips"
    _clips(clips)
    capsys.readouterr()
    assert main(["train", "--model", "r3d_18", "--attention", "cbam", "--model-option", "attention_init=identity",
                 *SMALL, "--init-from", str(converted), "--init-exclude", "fc.*", "--data", "video-folder",
                 "--data-dir", str(clips), "--data-option", "frames=4", "--data-option", "size=8x8",
                 "--epochs", "1", "--batch-size", "3", "--lr", "1e-12", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "runs"), "--name", "ft"]) == 0
    out = capsys.readouterr().out
    assert f"initialised from {converted}: " in out and "2 left at their initial values (fc.weight, fc.bias)" in out
    run_dir = tmp_path / "runs" / "ft"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["init_from"], saved["init_exclude"]) == (str(converted), ["fc.*"])
    start, trained = st.load_file(str(converted)), st.load_file(str(run_dir / "last.safetensors"))
    assert start["fc.weight"].shape == (400, 32) and trained["fc.weight"].shape == (2, 32)
    params = [k for k in start if not k.startswith("fc.") and not k.endswith(BUFFERS)]
    assert len(params) > 60 and set(params) <= set(trained)
    for key in params:
        torch.testing.assert_close(trained[key], start[key], rtol=0, atol=1e-9, msg=key)


def test_init_from_errors_are_one_line(tmp_path: Path, capsys) -> None:
    tiny = ["--data-option", "train_size=8", "--data-option", "val_size=4", "--data-option", "size=16x16",
            "--data-option", "radius=2,3", "--data-option", "frames=4", "--batch-size", "4", "--quiet",
            "--device", "cpu", "--epochs", "1", "--out", str(tmp_path / "runs")]
    st.save_file({"nope.weight": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    for path, expected in ((tmp_path / "none.safetensors", "init_from: weights file not found: "),
                           (tmp_path / "foreign.safetensors", "1 checkpoint key(s) not in the model: nope.weight")):
        assert main(["train", *tiny, "--init-from", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
