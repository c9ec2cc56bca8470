"""The run directory: one object that knows every file a training run writes and reads.

Layout (written by rank 0 only; every file atomically, via a temporary file and a
rename, so a killed process leaves the previous version, never a half-written one)::

    RUN/
      config.yaml        the resolved TrainConfig (read back by --resume and excite eval);
                         a run given its own model or data through the Python API also
                         records them here as custom_model / custom_data (CUSTOM_KEYS)
      metrics.csv        one row per finished epoch (columns: METRIC_COLUMNS)
      summary.json       the run's summary (see excite.engine.summary), status
                         "running" / "interrupted" / "finished" / "diverged" / "failed"
      curves.png         loss and accuracy per epoch (redrawn after every epoch)
      last.safetensors   weights after the latest epoch
      best.safetensors   weights of the epoch with the best validation accuracy
      state.pt           resumable training state (see excite.engine.state)
      eval-DATA-CHECKPOINT[-HASH]/   written by excite eval (see excite.engine.evaluate)

A new run claims its folder atomically: :meth:`RunDirectory.claim` creates it with a
``mkdir`` that fails when the name is taken (then tries ``NAME-2``, ``NAME-3``, ... or,
for a name the user chose, refuses), and :meth:`RunDirectory.create` writes
``config.yaml`` only if no other run wrote one first. So two runs started at once never
share a folder.

One finished epoch is written as a unit, in this order: weights, ``metrics.csv``,
``summary.json``, and ``state.pt`` last. ``state.pt`` carries the metrics history, so a
run killed between two of these writes is repaired when it resumes
(:meth:`RunDirectory.repair_metrics` rewrites ``metrics.csv`` from the state, and the
epoch the state does not record is trained again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from excite.engine import checkpoint as ckpt
from excite.engine import reports
from excite.engine.config import TrainConfig, dump_yaml, load_yaml
from excite.errors import ExciteError, require

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"

METRIC_COLUMNS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr",
    "epoch_time_s", "train_samples_per_s",
)

#: summary statuses of a run that may start again from step 0 when it has no state.pt (it
#: stopped before its first save); others ("finished", excite convert's "converted") hold
#: weights that a restart would overwrite
RESTARTABLE = (None, "running", "interrupted", "failed", "diverged")

#: config.yaml / summary.json entries naming what a run trained that its config cannot
#: rebuild: a model or data given to :func:`excite.engine.fit` directly
CUSTOM_KEYS = ("custom_model", "custom_data")


def describe_custom(custom: Mapping[str, str]) -> str:
    """``"a custom model (Net) and custom data (blobs)"`` for the recorded custom parts."""
    parts = [f"custom {key.split('_', 1)[1]} ({custom[key]})" for key in CUSTOM_KEYS if key in custom]
    return "a " + " and ".join(parts)


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
            ExciteError: the folder does not exist or has no ``config.yaml``; or the run
                was trained on a custom model or custom data (:data:`CUSTOM_KEYS`), which
                its config cannot rebuild.
        """
        if not self.path.is_dir():
            raise ExciteError(f"run directory not found: {self.path}")
        if not self.config_path.is_file():
            raise ExciteError(f"{self.path} is not an excite run directory (no config.yaml)")
        values = load_yaml(self.config_path)
        custom = {k: str(values.pop(k)) for k in CUSTOM_KEYS if values.get(k) not in (None, "")}
        if custom:
            raise ExciteError(
                f"{self.path} was trained through excite.engine.fit on {describe_custom(custom)}, "
                "which its config.yaml cannot rebuild, so neither `excite train --resume` nor "
                "`excite eval` can run it; resume it from Python with fit(config, model=..., "
                f"splits=..., run_dir='{self.path}', resume=True), and evaluate by loading "
                f"{self.best_path.name} into that model"
            )
        return TrainConfig.from_dict(values)

    def read_config_values(self) -> dict[str, Any]:
        """``config.yaml`` as the plain mapping it holds (no defaults filled in)."""
        return load_yaml(self.config_path)

    def custom_parts(self) -> dict[str, str]:
        """The custom model / data the run recorded (:data:`CUSTOM_KEYS`; empty for a run
        whose config rebuilds everything)."""
        if not self.config_path.is_file():
            return {}
        values = load_yaml(self.config_path)
        return {k: str(values[k]) for k in CUSTOM_KEYS if values.get(k) not in (None, "")}

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json``, or ``None`` when the run has not written one."""
        return reports.read_json(self.summary_path) if self.summary_path.is_file() else None

    def status(self) -> str | None:
        """The summary's ``status`` (``None`` without a summary)."""
        summary = self.read_summary()
        return summary.get("status") if summary is not None else None

    def has_state(self) -> bool:
        return self.state_path.is_file()

    def restartable(self) -> bool:
        """True for a run that stopped before saving a state (``config.yaml``, no
        ``state.pt``, a :data:`RESTARTABLE` status): ``--resume`` starts it from step 0."""
        if self.has_state() or not self.config_path.is_file():
            return False
        try:
            return self.status() in RESTARTABLE
        except (OSError, ValueError):  # an unreadable summary: leave the folder alone
            return False

    def holds_run(self) -> bool:
        """True when a run was started here (``config.yaml`` or ``state.pt`` exists)."""
        return self.config_path.is_file() or self.state_path.is_file()

    def load_state(self, required: tuple[str, ...] = ()) -> dict[str, Any]:
        """``state.pt`` (``torch.load(weights_only=True)``); see :func:`checkpoint.load_state`."""
        return ckpt.load_state(self.state_path, required=required)

    def taken_message(self) -> str:
        """Why a new run cannot start here, and what to do instead (one line)."""
        p = self.path
        if self.has_state():
            return f"run directory {p} already exists; continue it with --resume {p} or choose another --name"
        if self.restartable():
            return (f"run directory {p} already exists; continue it with --resume {p} (it stopped "
                    "before saving a resumable state, so that starts it again from step 0 with its "
                    "saved config) or choose another --name")
        if self.config_path.is_file():
            return f"run directory {p} already exists (status {self.status()!r}); choose another --name"
        return f"{p} already exists and is not an excite run directory; choose another --name or --out"

    # -- opening -----------------------------------------------------------------
    @classmethod
    def claim(cls, base: str | Path, *, numbered: bool) -> RunDirectory:
        """Create a new, empty run directory at ``base`` with a ``mkdir`` that fails when
        the name is taken, so two runs started at once never get the same folder.

        Args:
            base: the folder wanted.
            numbered: when ``base`` is taken, try ``base-2``, ``base-3``, ... (a default
                name); otherwise refuse (a name the user chose).

        Raises:
            ExciteError: ``base`` is taken and not ``numbered`` (the message says how to
                continue the run there); or its parent is not a folder.
        """
        base = Path(base)
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ExciteError(f"cannot create run directories under {base.parent}: "
                              "a file is in the way (out must be a folder)") from exc
        path, n = base, 1
        while True:
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                if not numbered:
                    raise ExciteError(cls(path).taken_message()) from None
            n += 1
            path = base.with_name(f"{base.name}-{n}")

    def create(self, config: TrainConfig, *, custom: Mapping[str, str] | None = None) -> None:
        """Start a new run here: make the folder and write ``config.yaml``, only if no
        other run has written one (an atomic check: exactly one of two runs racing for the
        folder succeeds).

        Args:
            config: the run's config.
            custom: the custom model / data entries (:data:`CUSTOM_KEYS`) to record.

        Raises:
            ExciteError: the folder already holds a run.
        """
        if self.has_state():
            raise ExciteError(self.taken_message())
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            ckpt.atomic_write_text(self.config_path, self._config_text(config, custom), exclusive=True)
        except FileExistsError:
            raise ExciteError(self.taken_message()) from None

    def write_config(self, config: TrainConfig, *, custom: Mapping[str, str] | None = None) -> None:
        """Rewrite ``config.yaml`` of a resumed run (its epochs may have changed)."""
        ckpt.atomic_write_text(self.config_path, self._config_text(config, custom))

    @staticmethod
    def _config_text(config: TrainConfig, custom: Mapping[str, str] | None) -> str:
        text = dump_yaml(config)
        if custom:  # first, so a reader sees them before the fields they replace
            head = {k: custom[k] for k in CUSTOM_KEYS if k in custom}
            text = _yaml_lines(head) + text
        return text

    def remove_stray_temps(self) -> list[Path]:
        """Remove temporary files that interrupted atomic writes left here."""
        return ckpt.remove_stray_temps(self.path)

    def repair_metrics(self, history: Sequence[Mapping[str, Any]]) -> str | None:
        """Make ``metrics.csv`` hold exactly the epochs of ``history`` (the state's).

        A run killed after writing an epoch's ``metrics.csv`` row but before its
        ``state.pt`` has one row more than its state; one written by an older version
        (state first) could have one less. Either way the state is the truth.

        Returns:
            What was repaired (one line), or ``None`` when nothing needed to be.
        """
        rows = reports.read_csv(self.metrics_path) if self.metrics_path.is_file() else []
        on_disk = [row.get("epoch") for row in rows]
        wanted = [row["epoch"] for row in history]
        if on_disk == wanted:
            return None
        reports.write_csv(self.metrics_path, history, METRIC_COLUMNS)
        return (f"{self.metrics_path} had epochs {_span(on_disk)} but {self.state_path.name} records "
                f"{_span(wanted)} (the run was killed between the two writes): rewrote it from "
                f"{self.state_path.name}")

    # -- writing -----------------------------------------------------------------
    def save_state(self, state: Mapping[str, Any]) -> None:
        ckpt.save_state(self.state_path, state)

    def save_epoch(self, *, model: nn.Module, history: Sequence[Mapping[str, Any]], improved: bool,
                   state: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
        """Everything one finished epoch leaves behind, in this order: ``last`` weights
        (and ``best`` when ``improved``), ``metrics.csv``, ``summary.json``, and
        ``state.pt`` last (it says the epoch is done; see the module docstring).

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
        reports.write_csv(self.metrics_path, history, METRIC_COLUMNS)
        self.save_summary(summary)
        self.save_state(state)
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


def _yaml_lines(values: Mapping[str, Any]) -> str:
    yaml = require("yaml", extra="train", purpose="writing YAML configs")
    return yaml.safe_dump(dict(values), sort_keys=False)


def _span(epochs: Sequence[Any]) -> str:
    if not epochs:
        return "none"
    return f"{epochs[0]}..{epochs[-1]}" if len(epochs) > 1 else str(epochs[0])
