"""One line instead of a traceback (issue 13, item 13): bad numbers, --out on a file,
eval's --device cuda without CUDA and --batch-size 0, a foreign state dict, a subset
larger than its split; optional packages checked before training starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from excite.cli import main
from excite.engine import reports

TINY = ["--data-option", "train_size=16", "--data-option", "val_size=8",
        "--data-option", "size=16x16", "--data-option", "radius=2,3", "--data-option", "frames=4",
        "--batch-size", "8", "--quiet", "--device", "cpu"]


def _error(capsys, argv: list[str]) -> str:
    """Run argv, expect exit 2 and exactly one line on stderr; return it."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--label-smoothing", "2", "label_smoothing must be a finite number in [0, 1), got 2.0"),
    ("--label-smoothing", "1", "label_smoothing must be a finite number in [0, 1), got 1.0"),
    ("--label-smoothing", "nan", "label_smoothing must be a finite number in [0, 1), got nan"),
    ("--label-smoothing", "-0.1", "label_smoothing must be a finite number in [0, 1), got -0.1"),
    ("--warmup-epochs", "inf", "warmup_epochs must be a finite number in [0, inf), got inf"),
    ("--warmup-epochs", "nan", "warmup_epochs must be a finite number in [0, inf), got nan"),
    ("--weight-decay", "nan", "weight_decay must be a finite number in [0, inf), got nan"),
    ("--log-interval", "-1", "log_interval must be an int >= 0, got -1"),
])
def test_bad_numbers_are_one_line_errors(capsys, tmp_path, flag, value, expected):
    assert _error(capsys, ["train", flag, value, "--out", str(tmp_path)]).endswith(expected)
    assert not list(tmp_path.iterdir())


def test_config_file_values_are_checked_the_same_way(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"label_smoothing": float("nan")}))
    assert "label_smoothing must be a finite number in [0, 1), got nan" in _error(
        capsys, ["train", "--config", str(path)])


@pytest.mark.parametrize("command", ["train", "compare"])
def test_out_naming_a_file_is_a_one_line_error(capsys, tmp_path, command):
    out = tmp_path / "notes.txt"
    out.write_text("mine\n")
    err = _error(capsys, [command, "--out", str(out), *TINY])
    assert err.endswith(f"--out {out} is a file, not a folder; give a folder for the runs")
    err = _error(capsys, [command, "--out", str(out / "runs"), *TINY])
    assert f"is inside {out}, which is a file" in err
    assert out.read_text() == "mine\n" and sorted(tmp_path.iterdir()) == [out]


def test_train_subset_larger_than_the_split_is_refused(capsys, tmp_path):
    err = _error(capsys, ["train", "--train-subset", str(10**9), "--out", str(tmp_path), *TINY])
    assert err.endswith("train_subset 1000000000 is larger than the split it is drawn from (16 samples)")
    err = _error(capsys, ["train", "--val-subset", "9", "--out", str(tmp_path), *TINY])
    assert err.endswith("val_subset 9 is larger than the split it is drawn from (8 samples)")
    assert not list(tmp_path.glob("*/*.safetensors"))


def _fake_run(tmp_path: Path) -> Path:
    """A run directory whose config is the TINY one (no training needed)."""
    run = tmp_path / "run"
    run.mkdir()
    options = {"train_size": 16, "val_size": 8, "size": "16x16", "radius": "2,3", "frames": 4}
    run.joinpath("config.yaml").write_text(yaml.safe_dump({"data_options": options, "batch_size": 8}))
    return run


def test_eval_batch_size_zero_is_refused_not_replaced(capsys, tmp_path):
    run = _fake_run(tmp_path)
    for value in ("0", "-3"):
        assert _error(capsys, ["eval", str(run), "--batch-size", value]).endswith(
            f"batch_size must be an int >= 1, got {value}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_eval_device_cuda_without_cuda_is_one_line(capsys, tmp_path):
    err = _error(capsys, ["eval", str(_fake_run(tmp_path)), "--device", "cuda"])
    assert err.endswith("device 'cuda' was requested but CUDA is not available")


def test_a_foreign_state_dict_names_the_keys_on_one_line(capsys, tmp_path):
    from safetensors.torch import save_file

    import excite

    run = _fake_run(tmp_path)
    other = excite.create_model("resnet20", num_classes=4, in_channels=1, spatial_dims=3)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(run / "best.safetensors"))
    err = _error(capsys, ["eval", str(run), "--device", "cpu"])
    assert f"weights in {run / 'best.safetensors'} do not fit the model: " in err
    assert "Error(s) in loading state_dict" not in err
    mine = excite.create_model("tiny_resnet", attention="cbam", num_classes=4, in_channels=1, spatial_dims=3)
    theirs, ours = set(other.state_dict()), set(mine.state_dict())
    # the counts and the first keys of both kinds, on the one line
    assert f"{len(theirs - ours)} checkpoint key(s) not in the model: " in err
    assert f"{len(ours - theirs)} model key(s) missing from the checkpoint: " in err
    assert sorted(theirs - ours)[0] in err and sorted(ours - theirs)[0] in err


def test_missing_matplotlib_is_reported_before_training_starts(capsys, tmp_path, monkeypatch):
    import excite.engine.train as train_module

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    reports.plotting_available.cache_clear()
    seen: list[str] = []

    def fit(config, **kwargs):  # stands in for training: what had been said when it started?
        seen.append(capsys.readouterr().err)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "fit", fit)
    try:
        assert main(["train", "--out", str(tmp_path), *TINY]) == 130
    finally:
        reports.plotting_available.cache_clear()
    (err,) = seen
    assert err.startswith("excite train: warning: drawing PNG plots needs the package 'matplotlib'")
    assert err.strip().endswith("PNG plots are skipped")


def test_a_run_without_matplotlib_trains_and_skips_its_plots(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    reports.plotting_available.cache_clear()
    try:
        assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--name", "r", *TINY]) == 0
    finally:
        reports.plotting_available.cache_clear()
    assert capsys.readouterr().err.count("PNG plots are skipped") == 1
    run = tmp_path / "r"
    assert (run / "summary.json").is_file() and not (run / "curves.png").exists()


def test_tensorboard_without_the_package_fails_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    err = _error(capsys, ["train", "--tensorboard", "--out", str(tmp_path), "--name", "r", *TINY])
    assert err.startswith("excite train: error: --tensorboard logging needs the package 'tensorboard'")
    assert err.endswith("install it with: pip install tensorboard (or pip install 'excite[tensorboard]')")
    assert not (tmp_path / "r" / "config.yaml").exists()
