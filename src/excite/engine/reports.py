"""Files in a run directory: CSV tables, JSON summaries and PNG plots (written atomically).

Plots use matplotlib's Agg backend (no display needed). matplotlib is optional (the
``train`` extra): the ``plot_*`` functions raise its install hint when it is missing,
and the engine asks :func:`plotting_available` first, which warns once and lets a run
go on without its PNGs. Every plot shows what a reader needs to judge it: accuracy axes
start at 0 or at chance accuracy (drawn as a line) and leave headroom above 1.0, losses
are on a log scale, the best epoch is marked, and every seed of a comparison is its own
point next to the mean.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import platform
import statistics
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from excite.engine.checkpoint import atomic_write, atomic_write_text
from excite.errors import MissingDependencyError, require


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a table written by :func:`write_csv`: numbers parsed back (int, then
    float), empty cells as ``None``, anything else as the string."""
    with open(path, newline="") as handle:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _parse(text: str | None) -> Any:
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(jsonable(data), indent=2, sort_keys=False) + "\n")


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: mappings with string keys, tuples as lists,
    non-finite floats as ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def versions() -> dict[str, str]:
    import numpy
    import torch

    from excite import __version__

    return {
        "excite": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


# -- plots ---------------------------------------------------------------------------
@functools.cache
def plotting_available() -> bool:
    """Whether matplotlib can be imported. When it cannot, warn once per process (with
    the install hint) that PNG plots are skipped; commands call this before they start."""
    try:
        require("matplotlib", extra="train", purpose="drawing PNG plots")
    except MissingDependencyError as exc:
        warnings.warn(f"{exc}; PNG plots are skipped", stacklevel=2)
        return False
    return True


def _pyplot():
    matplotlib = require("matplotlib", extra="train", purpose="drawing plots")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


#: Where accuracy axes end: a curve or a point at 1.0 stays visible.
ACC_TOP = 1.05


def accuracy_floor(values: Sequence[float | None], chance: float | None) -> float:
    """Where an accuracy axis starts: at ``chance`` when no value is below it, else 0.

    Never just below the lowest value: an axis from 0.69 to 0.74 makes a small
    difference look like a chasm.
    """
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if chance is not None and 0 < chance < 1 and all(v >= chance for v in clean):
        return float(chance)
    return 0.0


def _chance_line(ax: Any, chance: float | None) -> None:
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label=f"chance {chance:.3g}")


def _integer_ticks(*axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _floats(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """Column ``key`` as floats; missing and non-finite values become NaN (gaps)."""
    out = []
    for row in rows:
        value = row.get(key)
        number = float(value) if isinstance(value, (int, float)) else math.nan
        out.append(number if math.isfinite(number) else math.nan)
    return out


def _log_axis(ax: Any, values: Sequence[float]) -> None:
    """A log-scale y axis labelled 0.5, 1, 2 (not 5 x 10^-1), with enough labels when the
    values span less than a decade or two."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log", nonpositive="mask")
    positive = [v for v in values if math.isfinite(v) and v > 0]
    decades = math.log10(max(positive) / min(positive)) if positive else 3.0
    if decades < 2:
        subs = (1.0, 1.2, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 5.0)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_curves(path: str | Path, history: Sequence[Mapping[str, Any]], title: str = "", *,
                chance: float | None = None, best_epoch: int | None = None) -> Path:
    """Loss (log scale) and accuracy per epoch, train and validation, side by side.

    Args:
        path: the PNG to write.
        history: metrics rows with ``epoch``, ``train_loss``, ``val_loss``,
            ``train_acc`` and ``val_acc``.
        title: the figure's title.
        chance: chance accuracy 1/K: a dashed line, and the accuracy axis starts there
            unless a value is below it.
        best_epoch: the (1-based) epoch of the ``best`` weights, marked in both panels.
    """
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    ax_loss.plot(epochs, _floats(history, "train_loss"), "o-", label="train")
    ax_loss.plot(epochs, _floats(history, "val_loss"), "s-", label="val")
    _log_axis(ax_loss, _floats(history, "train_loss") + _floats(history, "val_loss"))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss (log scale)")
    train_acc, val_acc = _floats(history, "train_acc"), _floats(history, "val_acc")
    ax_acc.plot(epochs, train_acc, "o-", label="train")
    ax_acc.plot(epochs, val_acc, "s-", label="val")
    _chance_line(ax_acc, chance)
    if best_epoch is not None and best_epoch in epochs:
        best = val_acc[epochs.index(best_epoch)]
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_epoch, color="tab:green", linestyle=":", linewidth=1)
        ax_acc.plot([best_epoch], [best], "*", color="tab:green", markersize=12,
                    label=f"best: epoch {best_epoch}, {best:.4f}")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(accuracy_floor(train_acc + val_acc, chance), ACC_TOP)
    ax_loss.legend()
    ax_acc.legend(loc="best", fontsize=8)
    _integer_ticks(ax_loss, ax_acc)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)


def plot_run_curves(path: str | Path, history: Sequence[Mapping[str, Any]],
                    summary: Mapping[str, Any], title: str = "") -> Path:
    """:func:`plot_curves` for a run: the chance line and the best epoch come from its
    ``summary`` (``chance_acc``, ``best_epoch``), and so does the default title
    ``MODEL + ATTENTION on DATA``."""
    title = title or f"{summary.get('model')} + {summary.get('attention')} on {summary.get('data')}"
    return plot_curves(path, history, title, chance=summary.get("chance_acc"),
                       best_epoch=summary.get("best_epoch"))


def plot_confusion(path: str | Path, confusion: Any, class_names: Sequence[str],
                   title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = true class) with counts in the cells.

    Args:
        path: the PNG to write.
        confusion: (K, K) counts; rows = true class, columns = predicted class.
        class_names: the K class names.
        title: what was evaluated (``excite eval`` names the run, the checkpoint, the
            dataset and the accuracy).
    """
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, np.maximum(totals, 1))
    k = counts.shape[0]
    size = max(3.5, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1.5, size + (0.5 if title else 0)), layout="constrained")
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels=list(class_names), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=list(class_names), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if title:
        ax.set_title(title, fontsize=9)
    return _save_figure(fig, path)


def plot_compare(path: str | Path, rows: Sequence[Mapping[str, Any]], title: str = "", *,
                 summaries: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]] | None = None,
                 ) -> Path:
    """Attention variants side by side, in two or three panels.

    1. Final validation accuracy: each seed's run as a point, the mean as a bar with
       its sample standard deviation as error bar, on an axis from chance (or 0) to
       above 1.0, with the chance line.
    2. Validation accuracy per epoch (with ``histories``): each seed a thin line, the
       mean over seeds a thick one.
    3. Training throughput (samples/s, mean over seeds).

    Args:
        path: the PNG to write.
        rows: the comparison table's rows (``attention``, ``acc_mean``, ``acc_std``,
            ``samples_per_s``).
        title: the figure's title.
        summaries: per attention, the summaries of its runs (``final_val_acc``,
            ``chance_acc``); without them panel 1 shows the means alone.
        histories: per attention, the metrics rows (``epoch``, ``val_acc``) of each run.
    """
    plt = _pyplot()
    names = [str(row["attention"]) for row in rows]
    summaries = summaries or {}
    points = {n: [s.get("final_val_acc") for s in summaries.get(n, ())] for n in names}
    chances = [s["chance_acc"] for runs in summaries.values() for s in runs if s.get("chance_acc")]
    chance = chances[0] if chances else None
    panels = 3 if histories else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.8), layout="constrained")
    ax_acc, ax_speed = axes[0], axes[-1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    every = [v for n in names for v in points[n]] + [row["acc_mean"] for row in rows]
    for i, row in enumerate(rows):
        color = colors[i % len(colors)]
        std = row.get("acc_std") or 0.0
        ax_acc.errorbar([i], [row["acc_mean"]], yerr=[std], fmt="_", markersize=30, capsize=6,
                        color=color, elinewidth=1.5, zorder=3)
        seeds = [v for v in points[names[i]] if v is not None]
        offsets = [(j - (len(seeds) - 1) / 2) * 0.08 for j in range(len(seeds))]
        ax_acc.plot([i + o for o in offsets], seeds, "o", color=color, alpha=0.6, markersize=5,
                    zorder=2)
        label = f"{row['acc_mean']:.3f}" + (f" ± {std:.3f}" if row.get("acc_std") is not None else "")
        ax_acc.annotate(label, (i, min(row["acc_mean"] + std, ACC_TOP)), textcoords="offset points",
                        xytext=(0, 5), ha="center", fontsize=7)
    _chance_line(ax_acc, chance)
    ax_acc.set_xticks(range(len(names)), labels=names)
    ax_acc.set_xlim(-0.6, len(names) - 0.4)
    ax_acc.set_ylim(accuracy_floor(every, chance), ACC_TOP + 0.05)
    ax_acc.set_xlabel("attention")
    ax_acc.set_ylabel("final val accuracy\n(points: seeds; bar: mean ± std)")
    if chance is not None:
        ax_acc.legend(loc="best", fontsize=7)

    if histories:
        ax_curves = axes[1]
        seen: list[float] = []
        for i, name in enumerate(names):
            color = colors[i % len(colors)]
            runs = [run for run in histories.get(name, ()) if run]
            for run in runs:
                accs = _floats(run, "val_acc")
                seen.extend(accs)
                ax_curves.plot([r["epoch"] for r in run], accs, "-", color=color, alpha=0.35,
                               linewidth=1)
            if runs and len({len(run) for run in runs}) == 1:
                means = [statistics.fmean(v) for v in zip(*(_floats(run, "val_acc") for run in runs))]
                ax_curves.plot([r["epoch"] for r in runs[0]], means, "o-", color=color, linewidth=2,
                               markersize=4, label=name)
        _chance_line(ax_curves, chance)
        ax_curves.set_ylim(accuracy_floor(seen, chance), ACC_TOP)
        ax_curves.set_xlabel("epoch")
        ax_curves.set_ylabel("val accuracy (thin: seeds; thick: mean)")
        ax_curves.legend(fontsize=7, loc="best")
        _integer_ticks(ax_curves)

    ax_speed.bar(names, [row.get("samples_per_s") or 0.0 for row in rows],
                 color=[colors[i % len(colors)] for i in range(len(names))])
    ax_speed.set_xlabel("attention")
    ax_speed.set_ylabel("training samples/s (mean over seeds)")
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)
