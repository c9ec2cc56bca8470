"""A run's resumable state: where it is (:class:`Counters`) and what ``state.pt`` holds.

``state.pt`` (read with ``torch.load(weights_only=True)``) holds the model, optimizer,
scheduler and GradScaler states, the Python/NumPy/torch RNG states, the
:class:`Counters`, the partial sums of an unfinished epoch (``partial``), the run's wall
time and the number of processes. Saved mid-epoch, it lets a resumed run continue at the
same step with the same RNG states and epoch sums, so on CPU it ends with the same
metrics and weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from excite.engine import checkpoint as ckpt
from excite.engine.metrics import ClassificationMeter
from excite.errors import ExciteError

STATE_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "step_in_epoch", "global_step")


@dataclasses.dataclass
class Counters:
    """How far a run has got (restored on resume).

    Attributes:
        epoch: epochs finished (0-based index of the current epoch).
        step_in_epoch: optimizer steps done in the current epoch.
        global_step: optimizer steps done in the run.
        history: the metrics row of every finished epoch.
        best_acc: best validation accuracy so far (-1 before the first epoch).
        best_epoch: its 1-based epoch (-1 before the first epoch).
        train_time: seconds spent in training epochs (data loading included).
        step_time: seconds spent in optimizer steps (forward, backward, update).
        train_samples: training samples seen, over all processes.
        prior_wall: wall time of the earlier sessions of a resumed run.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = -1
    train_time: float = 0.0
    step_time: float = 0.0
    train_samples: int = 0
    prior_wall: float = 0.0

    def finish_epoch(self, row: dict[str, Any]) -> bool:
        """Record a finished epoch's metrics ``row``; True when its ``val_acc`` is the best."""
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        improved = row["val_acc"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = row["val_acc"], row["epoch"]
        return improved

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Counters:
        return cls(
            epoch=int(state["epoch"]),
            step_in_epoch=int(state["step_in_epoch"]),
            global_step=int(state["global_step"]),
            history=list(state.get("history", [])),
            best_acc=float(state.get("best_acc", -1.0)),
            best_epoch=int(state.get("best_epoch", -1)),
            train_time=float(state.get("train_time", 0.0)),
            step_time=float(state.get("step_time", 0.0)),
            train_samples=int(state.get("train_samples", 0)),
            prior_wall=float(state.get("wall_time", 0.0)),
        )


def meter_sums(meter: ClassificationMeter | None, num_classes: int) -> dict[str, Any]:
    """The running sums of an unfinished epoch (zeros without a ``meter``)."""
    meter = meter or ClassificationMeter(num_classes)
    return {"loss_sum": meter.loss_sum, "count": meter.count, "correct": meter.correct,
            "correct_top5": meter.correct_top5, "confusion": meter.confusion}


def training_state(*, model: nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler,
                   scaler: torch.amp.GradScaler | None, counters: Counters,
                   partial: dict[str, Any], wall_time: float, world_size: int) -> dict[str, Any]:
    """The mapping saved as ``state.pt`` (the RNG states are taken now)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": ckpt.rng_state(),
        "epoch": counters.epoch,
        "step_in_epoch": counters.step_in_epoch,
        "global_step": counters.global_step,
        "partial": partial,
        "history": counters.history,
        "best_acc": counters.best_acc,
        "best_epoch": counters.best_epoch,
        "train_time": counters.train_time,
        "step_time": counters.step_time,
        "train_samples": counters.train_samples,
        "wall_time": wall_time,
        "world_size": world_size,
    }


@dataclasses.dataclass
class ResumePoint:
    """What a resumed run restores when its first epoch starts (used once).

    Attributes:
        rng: the RNG states saved with the state.
        partial: the saved epoch sums (totals over all ranks).
    """

    rng: Mapping[str, Any] | None
    partial: Mapping[str, Any] | None

    def apply(self, meter: ClassificationMeter, *, mid_epoch: bool, is_main: bool) -> None:
        """Mid-epoch: continue ``meter`` from the saved sums (on rank 0 only, so the
        all-reduce at the epoch's end counts them once) and restore the RNG states. At an
        epoch boundary nothing is restored: the epoch seed alone decides."""
        if not mid_epoch:
            return
        if self.partial is not None and is_main:
            p = self.partial
            meter.loss_sum, meter.count = float(p["loss_sum"]), int(p["count"])
            meter.correct, meter.correct_top5 = int(p["correct"]), int(p["correct_top5"])
            meter.confusion = p["confusion"].clone()
        if self.rng is not None:
            ckpt.set_rng_state(self.rng)


class SavedState:
    """A ``state.pt`` read back, checked against the run that resumes it.

    Args:
        path: the ``state.pt`` file.

    Raises:
        ExciteError: missing, truncated or foreign file, or one lacking ``STATE_KEYS``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.values = ckpt.load_state(self.path, required=STATE_KEYS)

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def check(self, *, world_size: int, epochs: int) -> None:
        """Raise when this state cannot continue with ``world_size`` processes to ``epochs``.

        Raises:
            ExciteError: interrupted mid-epoch with another number of processes.
            ValueError: ``epochs`` is below the epochs the run has reached.
        """
        saved_world = self.values.get("world_size", 1)
        if saved_world != world_size and self.values["step_in_epoch"]:
            raise ExciteError(
                f"{self.run_dir} was interrupted mid-epoch with {saved_world} process(es); "
                f"resume it with the same number of processes (got {world_size})"
            )
        needed = int(self.values["epoch"]) + (1 if self.values["step_in_epoch"] else 0)
        if epochs < needed:
            raise ValueError(
                f"epochs must be at least {needed} to resume {self.run_dir} (it has reached epoch "
                f"{needed}), got {epochs}"
            )

    def load_into(self, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler,
                  scaler: torch.amp.GradScaler | None) -> None:
        """Restore the model, optimizer, scheduler and (when both exist) GradScaler states.

        Raises:
            ExciteError: the saved weights do not fit ``model``.
        """
        try:
            model.load_state_dict(self.values["model"])
        except RuntimeError as exc:
            raise ExciteError(f"state in {self.run_dir} does not fit the model: "
                              f"{str(exc).strip().splitlines()[0]}") from exc
        optimizer.load_state_dict(self.values["optimizer"])
        scheduler.load_state_dict(dict(self.values["scheduler"]))
        if scaler is not None and self.values.get("scaler"):
            scaler.load_state_dict(self.values["scaler"])

    def counters(self) -> Counters:
        return Counters.from_state(self.values)

    def resume_point(self) -> ResumePoint:
        return ResumePoint(rng=self.values["rng"], partial=self.values.get("partial"))
