"""The run directory: one object that knows every file a training run writes and reads.

Layout (written by rank 0 only; every file atomically, via a temporary file and a
rename, so a killed process leaves the previous version, never a half-written one)::

    RUN/
      config.yaml        the resolved TrainConfig (read back by --resume and excite eval)
      metrics.csv        one row per finished epoch (columns: METRIC_COLUMNS)
      summary.json       the run's summary (see excite.engine.summary), status
                         "running" / "interrupted" / "finished"
      curves.png         loss and accuracy per epoch (redrawn after every epoch)
      last.safetensors   weights after the latest epoch
      best.safetensors   weights of the epoch with the best validation accuracy
      state.pt           resumable training state (see excite.engine.state)
      eval-DATA-CHECKPOINT[-HASH]/   written by excite eval (see excite.engine.evaluate)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from excite.engine import checkpoint as ckpt
from excite.engine import reports
from excite.engine.config import TrainConfig, dump_yaml, load_yaml
from excite.errors import ExciteError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"

METRIC_COLUMNS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr",
    "epoch_time_s", "train_samples_per_s",
)


class RunDirectory:
    """The files of one run under ``path`` (nothing is touched until a method is called).

    Args:
        path: the run directory.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / CONFIG_FILE
        self.metrics_path = self.path / METRICS_FILE
        self.summary_path = self.path / SUMMARY_FILE
        self.curves_path = self.path / CURVES_FILE
        self.state_path = self.path / ckpt.STATE_FILE
        self.best_path = self.path / ckpt.BEST_WEIGHTS
        self.last_path = self.path / ckpt.LAST_WEIGHTS

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def weights_path(self, checkpoint: str) -> Path:
        """``best.safetensors`` or ``last.safetensors``.

        Raises:
            ValueError: ``checkpoint`` is not ``"best"`` or ``"last"``.
        """
        if checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
        return self.best_path if checkpoint == "best" else self.last_path

    # -- reading -----------------------------------------------------------------
    def read_config(self) -> TrainConfig:
        """The run's ``config.yaml`` as a :class:`TrainConfig`.

        Raises:
            ExciteError: the folder does not exist or has no ``config.yaml``.
        """
        if not self.path.is_dir():
            raise ExciteError(f"run directory not found: {self.path}")
        if not self.config_path.is_file():
            raise ExciteError(f"{self.path} is not an excite run directory (no config.yaml)")
        return TrainConfig.from_dict(load_yaml(self.config_path))

    def read_config_values(self) -> dict[str, Any]:
        """``config.yaml`` as the plain mapping it holds (no defaults filled in)."""
        return load_yaml(self.config_path)

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json``, or ``None`` when the run has not written one."""
        return reports.read_json(self.summary_path) if self.summary_path.is_file() else None

    def status(self) -> str | None:
        """The summary's ``status`` (``None`` without a summary)."""
        summary = self.read_summary()
        return summary.get("status") if summary is not None else None

    def has_state(self) -> bool:
        return self.state_path.is_file()

    def load_state(self, required: tuple[str, ...] = ()) -> dict[str, Any]:
        """``state.pt`` (``torch.load(weights_only=True)``); see :func:`checkpoint.load_state`."""
        return ckpt.load_state(self.state_path, required=required)

    # -- writing -----------------------------------------------------------------
    def create(self, config: TrainConfig) -> None:
        """Make the folder and write ``config.yaml``."""
        self.path.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(self.config_path, dump_yaml(config))

    def save_state(self, state: Mapping[str, Any]) -> None:
        ckpt.save_state(self.state_path, state)

    def save_epoch(self, *, model: nn.Module, history: Sequence[Mapping[str, Any]], improved: bool,
                   state: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
        """Everything one finished epoch leaves behind, in this order: ``last`` weights
        (and ``best`` when ``improved``), ``state.pt``, ``metrics.csv``, ``summary.json``.

        Args:
            model: the trained module (not a DDP / compiled wrapper).
            history: the metrics rows of every finished epoch; the last is this epoch's.
            improved: this epoch has the best validation accuracy so far.
            state: the resumable state after this epoch.
            summary: the summary after this epoch (status ``"running"``).
        """
        row = history[-1]
        meta = {"epoch": str(row["epoch"]), "val_acc": f"{row['val_acc']:.6f}"}
        ckpt.save_weights(self.last_path, model, meta)
        if improved:
            ckpt.save_weights(self.best_path, model, meta)
        self.save_state(state)
        reports.write_csv(self.metrics_path, history, METRIC_COLUMNS)
        self.save_summary(summary)
        self.save_curves(history, summary)  # a picture of the files above, so after them

    def save_summary(self, summary: Mapping[str, Any], *,
                     curves: Sequence[Mapping[str, Any]] = (), title: str = "") -> None:
        """Write ``summary.json``; with ``curves`` (the metrics rows) also ``curves.png``."""
        reports.write_json(self.summary_path, summary)
        if curves:
            self.save_curves(curves, summary, title=title)

    def save_curves(self, history: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], *,
                    title: str = "") -> None:
        """Draw ``curves.png`` (chance line and best epoch from ``summary``); skipped, after
        one warning, without matplotlib."""
        if reports.plotting_available():
            reports.plot_run_curves(self.curves_path, history, summary, title=title)
