"""`excite train` / `excite compare` never mix up or lose runs (issue 13 items 2, 5, 6, 8,
15), end to end through the CLI on tiny moving-shapes runs (seconds each). Two runs at
once and a SIGTERM mid-epoch: test_cli_reliability_kill.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from excite.cli import main
from excite.engine import TrainConfig
from excite.engine import checkpoint as ckpt
from excite.engine.rundir import RunDirectory

# 16 train / 8 val clips of 1x4x16x16, batch 8: 2 steps per epoch
TINY = ["--data-option", "train_size=16", "--data-option", "val_size=8", "--data-option", "size=16x16",
        "--data-option", "radius=2,3", "--data-option", "frames=4", "--batch-size", "8", "--quiet",
        "--device", "cpu"]


@pytest.fixture(autouse=True)
def no_curves(monkeypatch) -> None:
    monkeypatch.setattr(RunDirectory, "save_curves", lambda self, *args, **kwargs: None)  # not tested here


def _error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_dead_end_folder_says_how_to_continue_and_resume_restarts_it(tmp_path: Path, capsys) -> None:
    from excite.cli import build_parser
    from excite.cli.train import build_config

    # what a kill during epoch 1 leaves: the claimed folder with its config.yaml, no state
    argv = ["train", *TINY, "--epochs", "1", "--out", str(tmp_path), "--name", "x"]
    run_dir = RunDirectory.claim(tmp_path / "x", numbered=False)
    run_dir.create(build_config(build_parser().parse_args(argv)))
    err = _error(capsys, argv)
    assert f"run directory {run_dir.path} already exists; continue it with --resume {run_dir.path}" in err
    assert "starts it again from step 0 with its saved config" in err
    assert main(["train", "--resume", str(run_dir.path)]) == 0
    out = capsys.readouterr().out
    assert "has no saved state (it stopped before saving one): starting it again from step 0" in out
    assert json.loads(run_dir.summary_path.read_text())["status"] == "finished"


def test_compare_refuses_a_folder_with_another_config_and_reuses_an_identical_one(tmp_path: Path,
                                                                                  capsys) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", "--attention", "none", "--seeds", "1", "--out", str(out), *TINY]
    assert main([*argv, "--epochs", "1"]) == 0
    capsys.readouterr()
    run_dir = out / "none-s0"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    err = _error(capsys, [*argv, "--epochs", "2"])
    assert err == (f"excite compare: error: {run_dir} holds a run with another config (epochs: 1 there, "
                   "2 now); nothing was trained: use the same settings to reuse it, another --out, or "
                   "remove the folder to train it again")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing replaced
    # the same settings (progress output may differ): reused, and the log says which
    assert main([*argv, "--epochs", "1", "--log-interval", "1", "--save-every", "1"]) == 0
    text = capsys.readouterr().out
    assert "none-s0: finished earlier, skipped (same config: its results are reused)" in text
    assert "reused 1 finished run(s) with the same config: none-s0" in text
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_divergence_is_one_line_exit_2_and_leaves_no_nan_weights(tmp_path: Path, capsys) -> None:
    err = _error(capsys, ["train", *TINY, "--epochs", "2", "--lr", "1e6", "--optimizer", "sgd",
                          "--out", str(tmp_path), "--name", "div"])
    assert err.startswith("excite train: error: training diverged at step ")
    assert "try a lower learning rate (--lr)" in err
    run_dir = tmp_path / "div"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and isinstance(summary["diverged_at_step"], int)
    for name in ("best.safetensors", "last.safetensors"):
        if (run_dir / name).exists():  # only epochs whose weights were finite are ever saved
            assert all(bool(torch.isfinite(t).all()) for t in ckpt.load_weights(run_dir / name).values())


def test_a_full_disk_is_one_line_and_the_summary_says_failed(tmp_path: Path, capsys, monkeypatch) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    real = ckpt.create_temp

    def full_for_weights(path: Path):
        fd, tmp = real(path)
        if path.suffix == ".safetensors":
            os.close(fd)
            return os.open("/dev/full", os.O_WRONLY), tmp
        return fd, tmp

    monkeypatch.setattr(ckpt, "create_temp", full_for_weights)
    err = _error(capsys, ["train", *TINY, "--epochs", "1", "--out", str(tmp_path), "--name", "full"])
    weights = tmp_path / "full" / "last.safetensors"
    assert err.startswith(f"excite train: error: no space left on device: writing {weights} needs ")
    assert err.endswith("bytes free")
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["status"] == "failed"


def test_runs_of_a_custom_model_are_refused_by_eval_and_resume_with_the_reason(tmp_path: Path, capsys) -> None:
    run_dir = RunDirectory(tmp_path / "custom")
    run_dir.create(TrainConfig(epochs=1), custom={"custom_model": "MyNet"})
    (run_dir.path / "summary.json").write_text(json.dumps({"status": "finished", "num_classes": 4,
                                                            "input_shape": [1, 8, 8]}))
    ckpt.save_weights(run_dir.best_path, torch.nn.Linear(2, 2))
    for argv in (["eval", str(run_dir.path)], ["train", "--resume", str(run_dir.path), "--epochs", "2"]):
        err = _error(capsys, argv)
        assert "was trained through excite.engine.fit on a custom model (MyNet)" in err
        assert "cannot rebuild" in err
    from excite.runs import load_run

    with pytest.raises(Exception, match=r"custom model \(MyNet\)"):
        load_run(run_dir.path)
