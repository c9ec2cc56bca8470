"""The engine's small units on their own: data order, schedule, stop signals, run directory.

References are written out here: DistributedSampler's permutation (``randperm`` with seed
``seed + epoch``, wrapped to a multiple of N, rank r takes every N-th), the cosine formula,
the file layout and column names of a run directory.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from engine_helpers import BlobDataset
from excite.engine import TrainConfig
from excite.engine.checkpoint import load_state, load_weights
from excite.engine.rundir import RunDirectory
from excite.engine.schedule import epoch_indices, make_scheduler
from excite.engine.signals import STOP_MESSAGE, AbortRun, StopRequest
from excite.errors import ExciteError


def _permutation(n: int, seed: int, epoch: int, world_size: int, rank: int) -> list[int]:
    gen = torch.Generator()
    gen.manual_seed(seed + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    total = math.ceil(n / world_size) * world_size
    order += order[: total - n]
    return order[rank:total:world_size]


@pytest.mark.parametrize(("n", "world_size"), [(12, 1), (12, 2), (10, 3)])
def test_epoch_order_is_the_seeded_permutation_split_over_ranks(n: int, world_size: int) -> None:
    data = BlobDataset(n)
    for epoch in (0, 1):
        shares = [epoch_indices(data, seed=4, epoch=epoch, rank=r, world_size=world_size)
                  for r in range(world_size)]
        assert shares == [_permutation(n, 4, epoch, world_size, r) for r in range(world_size)]
    assert epoch_indices(data, seed=4, epoch=0) != epoch_indices(data, seed=4, epoch=1)


def test_scheduler_follows_cosine_per_step_and_saves_only_counters(tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, lr=0.1, schedule="cosine")
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=config.lr)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=5)  # T = 10 steps
    for t in range(1, 11):
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * t / 10)))
    torch.save(scheduler.state_dict(), tmp_path / "s.pt")
    assert torch.load(tmp_path / "s.pt", weights_only=True)["last_epoch"] == 10


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers need the main thread")
def test_first_signal_requests_a_stop_second_raises_and_handlers_come_back() -> None:
    def previous(signum, frame) -> None:  # noqa: ANN001
        raise AssertionError("the previous handler must not run while StopRequest is active")

    old = signal.signal(signal.SIGUSR1, previous)
    lines: list[str] = []
    try:
        with StopRequest([signal.SIGUSR1, signal.SIGUSR2], log=lines.append) as stop:
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.requested and lines == [
                "SIGUSR2 received: stopping after this step (SIGUSR2 again aborts without saving)"]
            with pytest.raises(AbortRun):  # a KeyboardInterrupt that says: nothing saved
                os.kill(os.getpid(), signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) is previous
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_ctrl_c_keeps_its_notice_and_sigterm_sigusr1_are_stop_signals() -> None:
    assert StopRequest(log=print).signals == (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    assert STOP_MESSAGE == "stopping after this step (Ctrl-C again to abort without saving)"
    assert issubclass(AbortRun, KeyboardInterrupt)


def test_stop_request_off_the_main_thread_installs_nothing() -> None:
    before = signal.getsignal(signal.SIGINT)
    seen: list[object] = []

    def worker() -> None:
        with StopRequest(log=print) as stop:
            seen.append(signal.getsignal(signal.SIGINT))
            stop.request()
            seen.append(stop.requested)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before, True]


def _row(epoch: int, val_acc: float) -> dict:
    return {"epoch": epoch, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 0.9, "val_acc": val_acc,
            "val_top5": None, "lr": 0.01, "epoch_time_s": 1.5, "train_samples_per_s": 10.0}


def test_run_directory_layout_and_one_epoch_of_files(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    config = TrainConfig(epochs=3)
    run.create(config)
    assert run.read_config() == config
    assert run.read_summary() is None and run.status() is None and not run.has_state()
    model = nn.Linear(2, 3)
    history = [_row(1, 0.5)]
    run.save_epoch(model=model, history=history, improved=True, state={"epoch": 1},
                   summary={"status": "running"})
    with torch.no_grad():
        model.weight.fill_(7.0)
    history.append(_row(2, 0.4))
    run.save_epoch(model=model, history=history, improved=False, state={"epoch": 2},
                   summary={"status": "running"})
    names = sorted(p.name for p in run.path.iterdir())
    curves = ["curves.png"] if importlib.util.find_spec("matplotlib") else []  # redrawn every epoch
    assert names == ["best.safetensors", "config.yaml", *curves, "last.safetensors", "metrics.csv",
                     "state.pt", "summary.json"]
    assert torch.equal(load_weights(run.last_path)["weight"], torch.full((3, 2), 7.0))
    assert not torch.equal(load_weights(run.best_path)["weight"], torch.full((3, 2), 7.0))
    with open(run.metrics_path) as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5",
                                 "lr", "epoch_time_s", "train_samples_per_s"]
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["val_top5"] == ""
    assert load_state(run.state_path)["epoch"] == 2
    assert run.status() == "running"
    run.save_summary({"status": "finished"}, curves=history, title="t")
    assert json.loads(run.summary_path.read_text()) == {"status": "finished"}
    assert run.curves_path.read_bytes()[:4] == b"\x89PNG"


def test_run_directory_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ExciteError, match="run directory not found: .*missing"):
        RunDirectory(tmp_path / "missing").read_config()
    with pytest.raises(ExciteError, match="is not an excite run directory \\(no config.yaml\\)"):
        RunDirectory(tmp_path).read_config()
    with pytest.raises(ValueError, match="checkpoint must be 'best' or 'last', got 'middle'"):
        RunDirectory(tmp_path).weights_path("middle")
