"""Files in a run directory: CSV tables, JSON summaries and PNG plots (written atomically).

Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from excite.engine.checkpoint import atomic_write, atomic_write_text
from excite.errors import require


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


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
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


def plot_curves(path: str | Path, history: Sequence[Mapping[str, Any]], title: str = "") -> Path:
    """Loss (train, val) and accuracy (train, val) per epoch, side by side."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    ax_loss.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    ax_loss.plot(epochs, [row["val_loss"] for row in history], "s-", label="val")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [row["train_acc"] for row in history], "o-", label="train")
    ax_acc.plot(epochs, [row["val_acc"] for row in history], "s-", label="val")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)


def plot_confusion(path: str | Path, confusion: Any, class_names: Sequence[str]) -> Path:
    """Row-normalised confusion matrix (rows = true class) with counts in the cells."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, np.maximum(totals, 1))
    k = counts.shape[0]
    size = max(3.5, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="constrained")
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
    return _save_figure(fig, path)


def plot_compare(path: str | Path, rows: Sequence[Mapping[str, Any]], title: str = "") -> Path:
    """Bar charts: accuracy (mean ± std over seeds) and training throughput per variant."""
    plt = _pyplot()
    names = [row["attention"] for row in rows]
    fig, (ax_acc, ax_tp) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    ax_acc.bar(names, [row["acc_mean"] for row in rows], yerr=[row["acc_std"] or 0 for row in rows],
               capsize=4, color="tab:blue")
    ax_acc.set_ylabel("final val accuracy (mean ± std)")
    low = min(row["acc_mean"] - (row["acc_std"] or 0) for row in rows)
    ax_acc.set_ylim(max(0.0, low - 0.1), 1.0)
    ax_tp.bar(names, [row["samples_per_s"] for row in rows], color="tab:orange")
    ax_tp.set_ylabel("training samples/s")
    for ax in (ax_acc, ax_tp):
        ax.set_xlabel("attention")
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)
