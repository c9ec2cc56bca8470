"""How runs stop (issue 13 items 4, 5, 6, 10): signals, aborts, --save-every, divergence,
a last batch of one.

The reference for every interrupted run is the uninterrupted run with the same seed:
resumed, it must end with exactly its metrics.csv values and weights (CPU).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from engine_helpers import TinyNet, blob_splits
from excite.engine import Callback
from excite.engine.batches import training_samples
from excite.engine.checkpoint import load_state, load_weights
from excite.engine.loop import DivergedError
from excite.engine.signals import AbortRun
from reliability_helpers import At, Killed, assert_same_run, kill, no_curves, rows, run, without_curves  # noqa: F401

main_thread_only = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                      reason="signal handlers need the main thread")


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted 2-epoch run (8 steps)."""
    tmp = tmp_path_factory.mktemp("straight")
    with without_curves():
        run(tmp, "straight")
    return tmp / "straight"


class SignalsInForward(TinyNet):
    """Sends itself ``signum`` twice in the middle of its ``at``-th training forward (after
    dropout drew from the RNG): a double Ctrl-C that lands inside an optimizer step."""

    def __init__(self, at: int, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.at, self.signum, self.calls = at, signum, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), self.signum)
                os.kill(os.getpid(), self.signum)
        return out


@main_thread_only
def test_a_second_signal_mid_step_aborts_without_saving_and_the_run_resumes_exactly(
        tmp_path: Path, straight: Path) -> None:
    lines: list[str] = []
    with pytest.raises(AbortRun):
        run(tmp_path, "double", model=lambda: SignalsInForward(at=6), log=lines.append)
    # nothing was saved in step 6: state.pt is still the end of epoch 1 (step 4)
    state = load_state(tmp_path / "double" / "state.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 0, 4)
    assert json.loads((tmp_path / "double" / "summary.json").read_text())["status"] == "running"
    assert lines[-2] == "stopping after this step (Ctrl-C again to abort without saving)"
    assert lines[-1].startswith("aborted without saving: ") and "end of epoch 1" in lines[-1]
    run(tmp_path, "double", resume=True)
    assert_same_run(straight, tmp_path / "double")


@main_thread_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_sigterm_and_sigusr1_stop_like_ctrl_c(tmp_path: Path, signum: int, straight: Path) -> None:
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt) as info:
        run(tmp_path, "sig", callbacks=[At(3, lambda t: os.kill(os.getpid(), signum))], log=lines.append)
    assert not isinstance(info.value, AbortRun)
    state = load_state(tmp_path / "sig" / "state.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 3, 3)
    assert json.loads((tmp_path / "sig" / "summary.json").read_text())["status"] == "interrupted"
    name = signal.Signals(signum).name
    assert f"{name} received: stopping after this step ({name} again aborts without saving)" in lines
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler)  # handler removed
    run(tmp_path, "sig", resume=True)
    assert_same_run(straight, tmp_path / "sig")


@main_thread_only
def test_a_signal_during_an_epochs_end_stops_at_that_boundary(tmp_path: Path) -> None:
    class SignalAtEpochEnd(Callback):
        def on_epoch_end(self, trainer, row) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # as if during validation or the epoch's saves

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "edge", callbacks=[SignalAtEpochEnd()])
    state = load_state(tmp_path / "edge" / "state.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 0, 4)  # no step 5


def test_save_every_bounds_what_a_kill_loses_and_resumes_exactly(tmp_path: Path, straight: Path) -> None:
    # killed (no handler runs) after step 7 of 8: the last save was step 6, mid-epoch 2
    with pytest.raises(Killed):
        run(tmp_path, "every", config={"save_every": 3}, callbacks=[At(7, kill)])
    state = load_state(tmp_path / "every" / "state.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 6)
    assert len(rows(tmp_path / "every")) == 1
    run(tmp_path, "every", config={"save_every": 3}, resume=True)
    assert_same_run(straight, tmp_path / "every")  # the saves did not disturb the run either


class NaNAt(TinyNet):
    """Returns NaN logits from its ``at``-th training forward on."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.at:
                return out * float("nan")
        return out


def _finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_weights(path).values())


def test_a_nan_loss_stops_at_its_step_keeps_the_last_finite_checkpoint_and_is_never_best(
        tmp_path: Path, straight: Path) -> None:
    with pytest.raises(DivergedError, match=r"^training diverged at step 6 \(epoch 2\): the loss of step 6 is nan; ") as info:
        run(tmp_path, "nan", model=lambda: NaNAt(at=6))
    message = str(info.value)
    assert "\n" not in message and "keeps its state at the end of epoch 1" in message
    assert (info.value.step, info.value.epoch) == (6, 2)
    run_dir = tmp_path / "nan"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_at_step"] == 6
    assert summary["best_epoch"] == 1 and summary["epochs_done"] == 1
    state = load_state(run_dir / "state.pt")
    assert state["global_step"] == 4 and state["best_epoch"] == 1
    assert len(rows(run_dir)) == 1
    for name in ("best.safetensors", "last.safetensors"):
        assert _finite(run_dir / name), name
    # the kept state is the uninterrupted run's after epoch 1: resuming finishes that run
    run(tmp_path, "nan", resume=True)
    assert_same_run(straight, run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_non_finite_weights_at_the_end_of_an_epoch_are_never_saved(tmp_path: Path) -> None:
    def poison(trainer) -> None:
        with torch.no_grad():
            trainer.setup.model.fc.weight[0, 0] = math.inf

    with pytest.raises(DivergedError, match=r"at step 4 \(epoch 1\): fc.weight is not finite after that step"):
        run(tmp_path, "inf", callbacks=[At(4, poison)])
    names = sorted(p.name for p in (tmp_path / "inf").iterdir())
    assert names == ["config.yaml", "summary.json"]
    assert json.loads((tmp_path / "inf" / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize(("n", "batch", "used"), [(17, 16, 16), (18, 16, 18), (16, 16, 16), (33, 16, 32),
                                                   (5, 1, 5), (3, 2, 2), (2, 2, 2)])
def test_training_drops_only_a_last_batch_of_one(n: int, batch: int, used: int) -> None:
    assert training_samples(n, batch) == used


def test_a_training_set_of_one_sample_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="1 sample per epoch; training needs at least 2"):
        training_samples(1, 16)


@pytest.mark.parametrize(("n_train", "steps"), [(17, 1), (18, 2)])
def test_a_training_set_of_one_more_than_a_multiple_of_the_batch_trains(tmp_path: Path, n_train: int,
                                                                        steps: int) -> None:
    lines: list[str] = []
    # TinyNet has BatchNorm: a batch of one would fail ("Expected more than 1 value per channel")
    summary = run(tmp_path, "odd", splits=blob_splits(n_train, 8), log=lines.append)
    assert summary["status"] == "finished" and summary["global_step"] == 2 * steps
    dropped = [line for line in lines if line.startswith("dropping the last batch")]
    assert len(dropped) == (1 if n_train == 17 else 0)
    if dropped:
        assert "it would hold 1 sample (17 training samples per process, batch 16)" in dropped[0]
