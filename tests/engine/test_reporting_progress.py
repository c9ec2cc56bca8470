"""Watching a run: step lines every log_interval steps without a bar, the finished-run
message, the learning rate an epoch used (issue 13, items 17 and 20)."""

from __future__ import annotations

import math

import pytest
import torch

from excite.engine.config import TrainConfig
from excite.engine.progress import Progress
from excite.engine.schedule import make_scheduler, mean_lr


def _epoch(progress: Progress, *, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
    progress.start_epoch(epoch, epochs, steps, done)
    for i in range(done, steps):
        progress.step(loss=1.0 / (i + 1), acc=0.25, samples_per_s=100.0)
    progress.end_epoch()


@pytest.mark.parametrize("quiet", [True, False])  # no terminal under pytest: no bar either way
def test_a_line_every_log_interval_steps_without_a_bar(quiet):
    lines: list[str] = []
    progress = Progress(True, quiet, lines.append, log_interval=2)
    assert not progress.use_bar
    _epoch(progress, epoch=0, epochs=3, steps=5)
    # steps 2 and 4 of 5 (the epoch's own line follows the last step)
    assert lines == [
        "epoch 1/3  step 2/5  loss 0.5000  acc 0.2500  100.0 samples/s",
        "epoch 1/3  step 4/5  loss 0.2500  acc 0.2500  100.0 samples/s",
    ]
    assert progress.last is not None and (progress.last.step, progress.last.steps) == (5, 5)


def test_step_lines_count_from_the_resumed_step():
    lines: list[str] = []
    progress = Progress(True, True, lines.append, log_interval=3)
    _epoch(progress, epoch=1, epochs=2, steps=10, done=4)  # resumed after step 4
    assert [line.split("  ")[1] for line in lines] == ["step 6/10", "step 9/10"]


@pytest.mark.parametrize(("enabled", "interval"), [(True, 0), (False, 1)])
def test_no_step_lines_at_interval_zero_or_off_rank_zero(enabled, interval):
    lines: list[str] = []
    progress = Progress(enabled, True, lines.append, log_interval=interval)
    _epoch(progress, epoch=0, epochs=1, steps=4)
    assert lines == []


def _started(progress: Progress, epochs: int) -> None:
    progress.started(model="m", attention="a", data="d", train=8, val=4, num_classes=2,
                     input_shape=(1, 4), epochs=epochs, device="cpu", world_size=1, run_dir="r")


def test_resuming_a_finished_run_says_there_is_nothing_to_train():
    lines: list[str] = []
    progress = Progress(True, True, lines.append)
    _started(progress, epochs=4)
    progress.resumed(4, 0)  # 0-based epoch 4 of 4: all done
    assert lines[-1] == "nothing to train: all 4 epochs are done (extend the run with --epochs)"
    progress.resumed(2, 3)
    assert lines[-1] == "resuming at epoch 3, step 3"


def _cosine(t: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * t / total))


@pytest.mark.parametrize(("schedule", "warmup"), [("cosine", 0.0), ("cosine", 1.0), ("constant", 0.5),
                                                  ("step", 0.0)])
def test_mean_lr_is_the_mean_rate_of_the_epochs_steps(schedule, warmup):
    steps, epochs, lr = 4, 3, 0.1
    config = TrainConfig(schedule=schedule, warmup_epochs=warmup, epochs=epochs, lr=lr, step_epochs=1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(optimizer, config, steps)
    total, warm = epochs * steps, round(warmup * steps)

    def rate(t: int) -> float:  # written out: warm-up times the schedule
        w = min(1.0, (t + 1) / warm) if warm else 1.0
        if schedule == "cosine":
            return lr * w * _cosine(t, total)
        if schedule == "step":
            return lr * w * 0.1 ** (t // steps)
        return lr * w

    for epoch in range(epochs):
        used = []
        for t in range(epoch * steps, (epoch + 1) * steps):
            used.append(optimizer.param_groups[0]["lr"])  # the rate step t runs at
            optimizer.step()
            scheduler.step()
        expected = sum(rate(t) for t in range(epoch * steps, (epoch + 1) * steps)) / steps
        assert sum(used) / steps == pytest.approx(expected, rel=1e-12)
        assert mean_lr(scheduler, epoch * steps, (epoch + 1) * steps) == pytest.approx(expected, rel=1e-12)
    # the optimizer now holds the rate after the last step (0 for cosine): not what ran
    if schedule == "cosine":
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
        assert mean_lr(scheduler, total - steps, total) > 0
