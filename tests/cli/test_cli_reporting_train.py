"""Watching a run (issue 13, items 17 and 20) through `excite train` on a tiny config:
a line every --log-interval steps without a terminal, curves.png after every epoch, the
metrics.csv lr column as the rate the epoch's steps used, TensorBoard scalars, and a
finished run's --resume that says so and trains nothing."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math

import pytest
import yaml

from excite.cli import main
from excite.engine import reports

LR, EPOCHS, STEPS = 0.01, 2, 4  # 16 training clips in batches of 4
TINY = ["--data-option", "train_size=16", "--data-option", "val_size=8",
        "--data-option", "size=16x16", "--data-option", "radius=2,3", "--data-option", "frames=4",
        "--batch-size", "4", "--quiet", "--device", "cpu"]


def _rate(t: int) -> float:
    """The cosine schedule written out: step t (0-based) of EPOCHS * STEPS runs at this."""
    return LR * 0.5 * (1 + math.cos(math.pi * t / (EPOCHS * STEPS)))


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """One run with --log-interval 2 and --tensorboard; what it printed and drew."""
    out = tmp_path_factory.mktemp("runs")
    drawn: list[int] = []
    real = reports.plot_run_curves

    def counting(path, history, summary, title=""):
        drawn.append(len(history))
        return real(path, history, summary, title)

    mp = pytest.MonkeyPatch()  # module scope: no monkeypatch / capsys fixtures
    mp.setattr(reports, "plot_run_curves", counting)
    stdout = io.StringIO()
    argv = ["train", "--epochs", str(EPOCHS), "--lr", str(LR), "--schedule", "cosine", "--log-interval", "2",
            "--out", str(out), "--name", "w", *TINY]
    if importlib.util.find_spec("tensorboard") is not None:
        argv.append("--tensorboard")
    try:
        with contextlib.redirect_stdout(stdout):
            assert main(argv) == 0
    finally:
        mp.undo()
    return {"run": out / "w", "stdout": stdout.getvalue(), "drawn": drawn}


def test_a_line_every_log_interval_steps(watched):
    lines = watched["stdout"].splitlines()
    steps = [line for line in lines if "  step " in line]
    assert [line.split("  loss")[0] for line in steps] == ["epoch 1/2  step 2/4", "epoch 2/2  step 2/4"]
    epoch_lines = [i for i, line in enumerate(lines) if line.startswith("epoch 1/2  train loss")]
    assert epoch_lines and lines.index(steps[0]) < epoch_lines[0]  # during the epoch, before its line


def test_curves_are_drawn_after_every_epoch(watched):
    assert watched["drawn"][:EPOCHS] == [1, 2]  # then once more when the run finishes
    assert (watched["run"] / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_lr_column_is_the_rate_the_epochs_steps_used(watched):
    rows = reports.read_csv(watched["run"] / "metrics.csv")
    for epoch, row in enumerate(rows):
        expected = sum(_rate(t) for t in range(epoch * STEPS, (epoch + 1) * STEPS)) / STEPS
        assert row["lr"] == pytest.approx(expected, rel=1e-5)
    assert rows[-1]["lr"] > 0.1 * LR  # not the rate after the last step (0 for cosine)


def test_tensorboard_scalars_per_step_and_per_epoch(watched):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(watched["run"] / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, EPOCHS * STEPS + 1))
    lr = events.Scalars("train/lr")
    assert [e.value for e in lr] == pytest.approx([_rate(t) for t in range(EPOCHS * STEPS)], rel=1e-6)
    # the step lines print the same losses (4 decimals)
    printed = [float(line.split("loss ")[1].split()[0]) for line in watched["stdout"].splitlines()
               if "  step " in line]
    assert printed == pytest.approx([loss[1].value, loss[STEPS + 1].value], abs=1e-4)
    rows = reports.read_csv(watched["run"] / "metrics.csv")
    for key in ("val_acc", "val_loss", "train_loss", "lr"):
        scalars = events.Scalars(f"epoch/{key}")
        assert [e.step for e in scalars] == [1, 2]
        assert [e.value for e in scalars] == pytest.approx([r[key] for r in rows], rel=1e-5)


def test_resuming_a_finished_run_says_it_is_finished_and_trains_nothing(watched, capsys):
    run = watched["run"]
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"{run} is finished: all {EPOCHS} epochs are done, nothing to train" in out
    assert "resuming at epoch" not in out and "validation accuracy:" in out
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == before


def test_print_config_of_a_resumed_run(watched, capsys):
    assert main(["train", "--resume", str(watched["run"]), "--epochs", "5", "--print-config"]) == 0
    values = yaml.safe_load(capsys.readouterr().out)
    assert (values["epochs"], values["lr"], values["log_interval"]) == (5, LR, 2)
