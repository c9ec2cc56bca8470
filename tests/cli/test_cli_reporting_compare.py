"""`excite compare` draws what a reader needs (issue 13, item 18): every seed's final
accuracy next to the mean ± std on an axis from chance, and each run's validation curve
read back from its metrics.csv. Training is replaced by a stand-in that writes a run's
metrics.csv and returns its summary, so only the wiring is under test here (the plots
themselves: tests/engine/test_reporting_plots.py)."""

from __future__ import annotations

import contextlib
import io
import statistics
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from excite.cli import main  # noqa: E402
from excite.engine import compare as compare_module  # noqa: E402
from excite.engine import reports  # noqa: E402

TINY = ["--data-option", "train_size=8", "--data-option", "val_size=4", "--data-option", "size=16x16",
        "--data-option", "radius=2,3", "--data-option", "frames=4", "--batch-size", "4", "--quiet",
        "--device", "cpu"]
FINAL = {("none", 0): 0.50, ("none", 1): 0.75, ("se", 0): 0.625, ("se", 1): 1.0}


def _fake_fit(config, *, run_dir, **kwargs):
    """Writes a two-epoch metrics.csv (val acc: half the final, then the final)."""
    final = FINAL[(config.attention, config.seed)]
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    history = [{"epoch": 1, "val_acc": final / 2}, {"epoch": 2, "val_acc": final}]
    reports.write_csv(run_dir / "metrics.csv", history, ("epoch", "val_acc"))
    return {"run_dir": str(run_dir), "status": "finished", "final_val_acc": final, "best_val_acc": final,
            "chance_acc": 0.25, "params": 10, "gmacs": 0.1, "train_samples_per_s": 5.0,
            "step_time_ms": 1.0, "peak_memory_mb": 1.0, "seed": config.seed}


def test_compare_png_shows_every_seed_and_its_curve(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(compare_module, "fit", _fake_fit)
    monkeypatch.setattr(reports, "_save_figure", lambda fig, path: figures.append(fig) or Path(path))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compare", "--attention", "none,se", "--seeds", "2", "--epochs", "2",
                     "--out", str(tmp_path / "cmp"), *TINY]) == 0
    (fig,) = figures
    ax_acc, ax_curves, _ = fig.axes
    lines = [list(map(float, line.get_ydata())) for line in ax_acc.get_lines()]
    for attention in ("none", "se"):
        seeds = [FINAL[(attention, s)] for s in (0, 1)]
        assert pytest.approx(seeds) in lines  # both seeds' points
        assert [pytest.approx(statistics.fmean(seeds))] in lines  # the mean
    assert ax_acc.get_ylim()[0] == pytest.approx(0.25)  # every value >= chance
    curves = [list(map(float, line.get_ydata())) for line in ax_curves.get_lines()]
    for final in FINAL.values():
        assert pytest.approx([final / 2, final]) in curves  # read back from each metrics.csv
    import matplotlib.pyplot as plt

    plt.close(fig)
