"""Plots a reader trusts (issue 13, item 18): curves.png with headroom above 1.0, a
log-scale loss, the chance line and the best epoch; compare.png with every seed, the
mean ± std and an axis from chance (or 0); the confusion matrix titled; and without
matplotlib, a run goes on without PNGs after one warning."""

from __future__ import annotations

import math
import statistics
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from excite.engine import reports  # noqa: E402

HISTORY = [
    {"epoch": 1, "train_loss": 1.30, "val_loss": 1.20, "train_acc": 0.30, "val_acc": 0.40},
    {"epoch": 2, "train_loss": 0.50, "val_loss": 0.70, "train_acc": 0.80, "val_acc": 0.90},
    {"epoch": 3, "train_loss": 0.05, "val_loss": 0.40, "train_acc": 1.00, "val_acc": 0.85},
]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw (kept open instead of saved)."""
    drawn = []

    def keep(fig, path):
        drawn.append(fig)
        return Path(path)

    monkeypatch.setattr(reports, "_save_figure", keep)
    yield drawn
    import matplotlib.pyplot as plt

    for fig in drawn:
        plt.close(fig)


def _hlines(ax) -> list[float]:
    """y of the horizontal lines drawn with axhline (x data spans the axes: 0 to 1)."""
    return [line.get_ydata()[0] for line in ax.get_lines() if list(line.get_xdata()) == [0, 1]]


def _points(ax) -> list[tuple[list[float], list[float]]]:
    return [(list(map(float, line.get_xdata())), list(map(float, line.get_ydata()))) for line in ax.get_lines()]


def test_curves_have_headroom_log_loss_chance_and_best_epoch(figures, tmp_path):
    reports.plot_curves(tmp_path / "c.png", HISTORY, "title", chance=0.25, best_epoch=2)
    (fig,) = figures
    ax_loss, ax_acc = fig.axes
    assert ax_loss.get_yscale() == "log"
    low, high = ax_acc.get_ylim()
    assert high > 1.0  # an accuracy of 1.0 is not drawn on the frame
    assert low == pytest.approx(0.25)  # every accuracy >= chance: the axis starts at chance
    assert _hlines(ax_acc) == [pytest.approx(0.25)]
    assert ([2.0], [0.9]) in _points(ax_acc)  # the best epoch's star at its val accuracy
    assert any("best: epoch 2" in t.get_text() for t in ax_acc.get_legend().get_texts())
    vertical = [line for line in ax_loss.get_lines() if list(line.get_xdata()) == [2, 2]]
    assert vertical  # marked in the loss panel too
    assert fig._suptitle.get_text() == "title"


def test_curves_axis_starts_at_zero_when_below_chance(figures, tmp_path):
    rows = [dict(HISTORY[0], val_acc=0.1), HISTORY[1]]
    reports.plot_curves(tmp_path / "c.png", rows, chance=0.25)
    assert figures[0].axes[1].get_ylim()[0] == 0.0


def test_run_curves_take_chance_best_and_title_from_the_summary(figures, tmp_path):
    summary = {"model": "tiny_resnet", "attention": "cbam", "data": "moving-shapes",
               "chance_acc": 0.25, "best_epoch": 2}
    reports.plot_run_curves(tmp_path / "c.png", HISTORY, summary)
    (fig,) = figures
    assert fig._suptitle.get_text() == "tiny_resnet + cbam on moving-shapes"
    assert _hlines(fig.axes[1]) == [pytest.approx(0.25)]
    assert ([2.0], [0.9]) in _points(fig.axes[1])


@pytest.mark.parametrize(("values", "chance", "floor"), [
    ([0.694, 0.732], 0.1, 0.1),     # close means: the axis still starts at chance
    ([0.694, 0.732], None, 0.0),
    ([0.05, 0.9], 0.1, 0.0),        # a value below chance: start at 0
    ([math.nan, 0.5, None], 0.25, 0.25),
])
def test_accuracy_floor(values, chance, floor):
    assert reports.accuracy_floor(values, chance) == floor


def _compare_inputs():
    finals = {"none": [0.70, 0.68, 0.704], "cbam": [0.74, 0.72, 0.736]}
    rows = [{"attention": a, "acc_mean": statistics.fmean(v), "acc_std": statistics.stdev(v),
             "samples_per_s": 100.0 + i} for i, (a, v) in enumerate(finals.items())]
    summaries = {a: [{"final_val_acc": x, "chance_acc": 0.1, "seed": s} for s, x in enumerate(v)]
                 for a, v in finals.items()}
    histories = {a: [[{"epoch": 1, "val_acc": x / 2}, {"epoch": 2, "val_acc": x}] for x in v]
                 for a, v in finals.items()}
    return finals, rows, summaries, histories


def test_compare_shows_every_seed_the_mean_and_std_from_chance(figures, tmp_path):
    finals, rows, summaries, histories = _compare_inputs()
    reports.plot_compare(tmp_path / "p.png", rows, "t", summaries=summaries, histories=histories)
    (fig,) = figures
    ax_acc, ax_curves, ax_speed = fig.axes
    lines = _points(ax_acc)
    for i, (attention, values) in enumerate(finals.items()):
        # each seed is a point near x = i (side by side), at its own accuracy
        seeds = [ys for xs, ys in lines if len(ys) == 3 and all(abs(x - i) < 0.5 for x in xs)]
        assert seeds == [pytest.approx(values)]
        assert ([float(i)], [pytest.approx(statistics.fmean(values))]) in lines  # the mean
    # the error bars span mean ± sample std
    caps = sorted(y for line in ax_acc.get_lines() for y in line.get_ydata() if line.get_marker() == "_")
    for row in rows:
        assert any(c == pytest.approx(row["acc_mean"] - row["acc_std"]) for c in caps)
        assert any(c == pytest.approx(row["acc_mean"] + row["acc_std"]) for c in caps)
    low, high = ax_acc.get_ylim()
    assert low == pytest.approx(0.1) and high > 1.0  # chance, not just below 0.68
    assert _hlines(ax_acc) == [pytest.approx(0.1)]
    texts = [t.get_text() for t in ax_acc.texts]
    assert f"{rows[0]['acc_mean']:.3f} ± {rows[0]['acc_std']:.3f}" in texts
    # per-epoch validation curves: 3 seeds + 1 mean per variant (+ chance line)
    mean_lines = [ys for _xs, ys in _points(ax_curves) if len(ys) == 2]
    for values in finals.values():
        assert pytest.approx([statistics.fmean(values) / 2, statistics.fmean(values)]) in mean_lines
        for v in values:
            assert pytest.approx([v / 2, v]) in mean_lines
    assert [p.get_height() for p in ax_speed.patches] == [100.0, 101.0]


def test_compare_without_summaries_still_draws_the_means(figures, tmp_path):
    _, rows, _, _ = _compare_inputs()
    reports.plot_compare(tmp_path / "p.png", rows)
    (fig,) = figures
    assert len(fig.axes) == 2 and fig.axes[0].get_ylim()[0] == 0.0


def test_confusion_matrix_has_its_title(figures, tmp_path):
    reports.plot_confusion(tmp_path / "c.png", [[3, 1], [0, 4]], ["a", "b"], title="run: best on d")
    assert figures[0].axes[0].get_title() == "run: best on d"


def test_pngs_are_written(tmp_path):
    path = reports.plot_curves(tmp_path / "c.png", HISTORY, chance=0.25, best_epoch=2)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_without_matplotlib_plots_are_skipped_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    reports.plotting_available.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert reports.plotting_available() is False
            assert reports.plotting_available() is False
        assert len(caught) == 1
        message = str(caught[0].message)
        assert "pip install matplotlib (or pip install 'excite[train]')" in message
        assert message.endswith("PNG plots are skipped")
    finally:
        reports.plotting_available.cache_clear()


def test_read_csv_reads_write_csv_back(tmp_path):
    rows = [{"epoch": 1, "val_acc": 0.123456789, "val_top5": None, "name": "x"}]
    reports.write_csv(tmp_path / "m.csv", rows, ("epoch", "val_acc", "val_top5", "name"))
    assert reports.read_csv(tmp_path / "m.csv") == [
        {"epoch": 1, "val_acc": 0.123457, "val_top5": None, "name": "x"}]
