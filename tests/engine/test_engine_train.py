"""fit(): run directory contents, learning, exact resume after interruption, Ctrl-C."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

from excite.engine import Callback, TrainConfig, fit
from excite.engine.checkpoint import load_state, load_weights
from excite.errors import ExciteError

from engine_helpers import TinyNet, blob_splits

# 64 train samples, batch 16 -> 4 steps per epoch
CONFIG = dict(epochs=2, batch_size=16, lr=0.05, quiet=True, device="cpu", seed=7)


def _fit(tmp: Path, name: str, **kw):
    config = TrainConfig(**{**CONFIG, **kw.pop("config", {})})
    torch.manual_seed(123)  # fit must not depend on the caller's RNG state
    return fit(config, splits=blob_splits(), model=TinyNet(), run_dir=tmp / name, log=lambda m: None, **kw)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


class StopAt(Callback):
    """Raise KeyboardInterrupt after global step ``step`` (like Ctrl-C between steps)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_run_directory_holds_every_artifact(tmp_path: Path) -> None:
    summary = _fit(tmp_path, "run", config={"epochs": 3})
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "summary.json", "curves.png",
                 "best.safetensors", "last.safetensors", "state.pt"):
        assert (run / name).is_file(), name
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == 0.05
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["status"] == "finished" and on_disk["epochs_done"] == 3
    # TinyNet: conv 1*8*3*3 + 8, BatchNorm 2*8, linear (8*2*2)*4 + 4
    assert summary["params"] == 72 + 8 + 16 + 128 + 4
    assert summary["global_step"] == 3 * 4
    assert summary["final_val_acc"] == pytest.approx(float(rows[-1]["val_acc"]), abs=1e-6)
    assert summary["best_val_acc"] == pytest.approx(max(float(r["val_acc"]) for r in rows), abs=1e-6)
    assert summary["train_samples_per_s"] > 0 and summary["step_time_ms"] > 0
    assert summary["peak_memory_mb"] > 10
    assert summary["versions"]["torch"] == torch.__version__
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learns_the_blob_task(tmp_path: Path) -> None:
    summary = _fit(tmp_path, "learn", config={"epochs": 4, "lr": 0.05})
    assert summary["final_val_acc"] >= 0.75  # chance is 0.25


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted 2-epoch run shared by the tests below."""
    tmp = tmp_path_factory.mktemp("straight")
    return tmp / "straight", _fit(tmp, "straight")


KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def test_same_seed_same_metrics(tmp_path: Path, straight) -> None:
    _fit(tmp_path, "again")
    rows_a, rows_b = _rows(straight[0]), _rows(tmp_path / "again")
    assert [{k: r[k] for k in KEYS} for r in rows_a] == [{k: r[k] for k in KEYS} for r in rows_b]


@pytest.mark.parametrize("stop_step", [3, 4, 6])  # mid-epoch 1, end of epoch 1, mid-epoch 2
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path: Path, stop_step: int, straight) -> None:
    straight_dir, straight = straight
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "resumed", callbacks=[StopAt(stop_step)])
    state = load_state(tmp_path / "resumed" / "state.pt")
    assert state["global_step"] == stop_step
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["status"] == "interrupted"
    resumed = _fit(tmp_path, "resumed", resume=True)

    a, b = _rows(straight_dir), _rows(tmp_path / "resumed")
    assert [{k: r[k] for k in KEYS} for r in a] == [{k: r[k] for k in KEYS} for r in b]
    wa = load_weights(straight_dir / "last.safetensors")
    wb = load_weights(tmp_path / "resumed" / "last.safetensors")
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert resumed["final_val_acc"] == straight["final_val_acc"]
    assert resumed["global_step"] == straight["global_step"] == 8


def test_resume_can_extend_epochs(tmp_path: Path) -> None:
    _fit(tmp_path, "short", config={"epochs": 1})
    summary = _fit(tmp_path, "short", config={"epochs": 2}, resume=True)
    assert summary["epochs_done"] == 2 and [r["epoch"] for r in _rows(tmp_path / "short")] == ["1", "2"]


def test_resume_cannot_shrink_below_the_epochs_done(tmp_path: Path) -> None:
    _fit(tmp_path, "done", config={"epochs": 2})
    with pytest.raises(ValueError, match="epochs must be at least 2 .* got 1"):
        _fit(tmp_path, "done", config={"epochs": 1}, resume=True)


def test_resume_without_state_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExciteError, match="no resumable training state"):
        _fit(tmp_path, "empty", resume=True)


def test_truncated_state_is_detected_on_resume(tmp_path: Path) -> None:
    _fit(tmp_path, "run", config={"epochs": 1})
    state = tmp_path / "run" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(ExciteError, match="truncated or corrupt"):
        _fit(tmp_path, "run", resume=True)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers need the main thread")
def test_sigint_finishes_the_step_saves_and_raises(tmp_path: Path) -> None:
    class SendSigint(Callback):
        def on_step_end(self, trainer) -> None:
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "sig", callbacks=[SendSigint()])
    state = load_state(tmp_path / "sig" / "state.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 2, 2)
    # the handler is removed afterwards
    assert signal.getsignal(signal.SIGINT) is not None


def test_model_that_does_not_fit_the_data_fails_before_training(tmp_path: Path) -> None:
    config = TrainConfig(**CONFIG)
    with pytest.raises(ValueError, match="in_channels=3 but dataset 'blobs' has 1 channel"):
        fit(config, splits=blob_splits(), model=TinyNet(in_channels=3), run_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="has 4 classes"):
        fit(config, splits=blob_splits(), model=TinyNet(num_classes=3), run_dir=tmp_path / "x")
    assert not (tmp_path / "x" / "state.pt").exists()




@pytest.mark.parametrize("options", [{"amp": "bf16"}, {"amp": "fp16"}, {"channels_last": True},
                                     {"optimizer": "sgd", "schedule": "step", "step_epochs": 1,
                                      "warmup_epochs": 0.5}])
def test_training_options_run_and_log_their_learning_rate(tmp_path: Path, options: dict) -> None:
    summary = _fit(tmp_path, "opt", config={"epochs": 2, **options})
    rows = _rows(tmp_path / "opt")
    assert all(float(r["train_loss"]) == float(r["train_loss"]) for r in rows)  # not NaN
    assert summary["amp"] == options.get("amp")
    if options.get("schedule") == "step":
        # the rate the epoch's steps used: 4 steps/epoch, warm-up over steps 0-1 ((t + 1) / 2),
        # x0.1 from epoch 2 on: epoch 1 = 0.05 * (0.5 + 1 + 1 + 1) / 4, epoch 2 = 0.1 * 0.05
        assert float(rows[0]["lr"]) == pytest.approx(0.04375)
        assert float(rows[1]["lr"]) == pytest.approx(0.005)


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_tty_and_plain_lines_otherwise(monkeypatch) -> None:
    from excite.engine.progress import Progress

    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    bar = Progress(enabled=True, quiet=False, log=print)
    assert bar.use_bar
    bar.start_epoch(0, 2, total=3, done=0)
    bar.step(loss=0.6931, acc=0.5, samples_per_s=123.4)
    bar.end_epoch()
    text = tty.getvalue()
    assert "epoch 1/2" in text and "loss=0.6931" in text and "acc=0.500" in text and "sps=123.4" in text
    assert not Progress(enabled=True, quiet=True, log=print).use_bar  # --quiet
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not Progress(enabled=True, quiet=False, log=print).use_bar  # not a TTY
    assert not Progress(enabled=False, quiet=False, log=print).use_bar  # rank != 0


SUMMARY_KEYS = [
    "status", "run_dir", "model", "attention", "data", "seed", "epochs",
    "epochs_done", "global_step",
    "num_classes", "chance_acc", "train_samples", "val_samples", "input_shape",
    "best_val_acc", "best_epoch", "final_val_acc", "final_val_top5", "final_val_loss",
    "final_train_loss", "final_train_acc",
    "params", "macs", "gmacs",
    "wall_time_s", "train_time_s", "train_samples_per_s", "step_time_ms",
    "peak_memory_mb", "memory_kind",
    "device", "world_size", "amp", "versions",
]


def test_summary_keys_in_their_documented_order(straight) -> None:
    run_dir, summary = straight
    # a run given its own model and data (TinyNet, blobs) records them after the others
    keys = [*SUMMARY_KEYS, "custom_model", "custom_data"]
    assert list(summary) == keys
    assert list(json.loads((run_dir / "summary.json").read_text())) == keys
    assert (summary["model"], summary["custom_model"], summary["data"], summary["custom_data"]) == (
        "TinyNet", "TinyNet", "blobs", "blobs")
    assert summary["chance_acc"] == 0.25 and summary["input_shape"] == [1, 8, 8]
    assert summary["epochs_done"] == 2 and summary["train_samples"] == 64


def test_a_callback_can_request_a_clean_stop(tmp_path: Path, straight) -> None:
    class Request(Callback):
        def on_step_end(self, trainer) -> None:
            if trainer.global_step == 5:
                trainer.stop.request()

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "req", callbacks=[Request()])
    state = load_state(tmp_path / "req" / "state.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 5)
    _fit(tmp_path, "req", resume=True)
    a, b = _rows(straight[0]), _rows(tmp_path / "req")
    assert [{k: r[k] for k in KEYS} for r in a] == [{k: r[k] for k in KEYS} for r in b]


def test_trainer_sets_all_its_attributes_in_init(tmp_path: Path) -> None:
    from excite.engine.train import Trainer

    trainer = Trainer(TrainConfig(**{**CONFIG, "epochs": 1}), splits=blob_splits(), model=TinyNet(),
                      run_dir=tmp_path / "t", resume=False, callbacks=(), log=lambda m: None)
    before = set(vars(trainer))
    trainer.run()
    assert set(vars(trainer)) == before
    assert trainer.setup is not None and trainer.meter is None and trainer.epoch == 1


def test_setup_refuses_an_uneven_batch_and_empty_splits() -> None:
    from torch.utils.data import Subset

    from excite.engine.distributed import DistContext
    from excite.engine.setup import prepare_run
    from excite.engine.builders import Splits

    config = TrainConfig(**CONFIG)
    with pytest.raises(ValueError, match="batch_size 16 .* must be divisible by the number of processes 3"):
        prepare_run(config, DistContext(rank=0, world_size=3), splits=blob_splits(), model=TinyNet())
    splits = blob_splits()
    empty = Splits(splits.train, Subset(splits.val, []), splits.info)
    with pytest.raises(ValueError, match="has an empty train or validation split"):
        prepare_run(config, DistContext(), splits=empty, model=TinyNet())
