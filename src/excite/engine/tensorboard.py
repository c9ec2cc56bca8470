"""TensorBoard logging of a training run (``excite train --tensorboard``), as a callback.

:func:`~excite.engine.fit` adds a :class:`TensorBoardLogger` when ``config.tensorboard``
is set; it needs the ``tensorboard`` package (the ``tensorboard`` extra), checked when
the logger is made, before the run builds anything. Rank 0 writes event files into
``RUN_DIR/tensorboard/`` (view them with ``tensorboard --logdir RUN_DIR/tensorboard``):

    per optimizer step (x = global step)   train/loss       the step's batch loss
                                           train/acc        the epoch's running accuracy
                                           train/lr         the rate the step used
                                           train/samples_per_s
    per epoch (x = epoch, 1-based)         epoch/<column>   every number of its
                                                            metrics.csv row (val_acc, ...)

A resumed run appends to the same folder, continuing the step count.
"""

from __future__ import annotations

import math
from typing import Any

from excite.engine.schedule import mean_lr
from excite.engine.train import Callback, Trainer
from excite.errors import require

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLogger(Callback):
    """Writes the run's scalars for TensorBoard (see the module docstring for the tags).

    Args:
        flush_secs: how often the event file is flushed (it is also flushed after every
            epoch).

    Raises:
        MissingDependencyError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, *, flush_secs: int = 10) -> None:
        require("tensorboard", extra="tensorboard", purpose="--tensorboard logging")
        self.flush_secs = flush_secs
        self.writer: Any = None

    def _writer(self, trainer: Trainer) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(trainer.run_dir / TENSORBOARD_DIR),
                                        flush_secs=self.flush_secs)
        return self.writer

    def on_step_end(self, trainer: Trainer) -> None:
        report = trainer.progress.last
        if not trainer.ctx.is_main or report is None or trainer.setup is None:
            return
        writer, step = self._writer(trainer), trainer.global_step
        writer.add_scalar("train/loss", report.loss, step)
        writer.add_scalar("train/acc", report.running_acc, step)
        writer.add_scalar("train/lr", mean_lr(trainer.setup.scheduler, step - 1, step), step)
        writer.add_scalar("train/samples_per_s", report.samples_per_s, step)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if not trainer.ctx.is_main:
            return
        writer = self._writer(trainer)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(f"epoch/{key}", value, row["epoch"])
        if row["epoch"] >= trainer.config.epochs:
            self.close()  # the last epoch: nothing more to write
        else:
            writer.flush()

    def close(self) -> None:
        """Flush and close the event file (a later event opens a new one)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
