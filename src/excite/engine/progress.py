"""What a training run tells the user: a tqdm bar on a terminal, plain lines otherwise.

Only rank 0 reports. Without a bar (no terminal, as in SLURM or nohup logs, or
``--quiet``) a line is printed every ``log_interval`` steps, so a log never goes silent
for a whole epoch. Every line the engine prints is written here, so their wording lives
in one place::

    training MODEL + attention A on DATA (N train / M val, K classes, input (C, ...)) for E
        epochs on DEVICE xWORLD; run dir RUN
    resuming at epoch E, step S
    nothing to train: all E epochs are done (extend the run with --epochs)
    epoch 1/4  step 50/200  loss 1.2345  acc 0.5000  812.3 samples/s
    epoch 1/4  train loss 1.2345 acc 0.5000  val loss 1.1111 acc 0.6000 top5 0.9  812.3 samples/s  2.1s
    interrupted: resumable state saved; continue with `excite train --resume RUN`
"""

from __future__ import annotations

import sys
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def _silent(_message: str) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class StepReport:
    """What the latest optimizer step reported.

    Attributes:
        epoch: 0-based epoch.
        step: steps of the epoch done, this one included (1-based).
        steps: steps in the epoch.
        loss: this step's training loss (its batch mean).
        running_acc: training accuracy over the epoch's steps so far.
        samples_per_s: training samples per second over the epoch so far.
    """

    epoch: int
    step: int
    steps: int
    loss: float
    running_acc: float
    samples_per_s: float


class Progress:
    """Progress bar and log lines of one run.

    Args:
        enabled: report at all (True on rank 0 only).
        quiet: never draw a bar (``--quiet``).
        log: where lines go (default ``print`` in :func:`~excite.engine.fit`).
        log_interval: without a bar, log a line every this many steps of an epoch
            (0: only the line per epoch).

    Attributes:
        log: ``log`` when enabled, else a function that drops its message.
        use_bar: whether a tqdm bar is drawn (enabled, not quiet, stderr is a terminal).
        log_interval: as given.
        last: the latest step's :class:`StepReport` (``None`` before the first step);
            callbacks read it (e.g. the TensorBoard logger).
    """

    def __init__(self, enabled: bool, quiet: bool, log: Callable[[str], None], *,
                 log_interval: int = 50) -> None:
        self.log = log if enabled else _silent
        self.use_bar = enabled and not quiet and sys.stderr.isatty()
        self.log_interval = log_interval if enabled else 0
        self.bar: Any = None
        self.last: StepReport | None = None
        self.epochs: int | None = None
        self._epoch = 0
        self._steps = 0
        self._done = 0

    # -- the bar and the step lines ----------------------------------------------------
    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
        """Open the bar of 0-based ``epoch`` with ``done`` of ``total`` steps behind it."""
        self.epochs, self._epoch, self._steps, self._done = epochs, epoch, total, done
        if self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}",
                            leave=False, dynamic_ncols=True)

    def step(self, loss: float, acc: float, samples_per_s: float) -> None:
        """One step done: advance the bar (showing the loss, the epoch's running accuracy
        and the speed) or, without a bar, log a line every ``log_interval`` steps."""
        self._done += 1
        self.last = StepReport(self._epoch, self._done, self._steps, loss, acc, samples_per_s)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", sps=f"{samples_per_s:.1f}")
        elif self.log_interval and self._done % self.log_interval == 0 and self._done < self._steps:
            self.log(f"epoch {self._epoch + 1}/{self.epochs}  step {self._done}/{self._steps}  "
                     f"loss {loss:.4f}  acc {acc:.4f}  {samples_per_s:.1f} samples/s")

    def end_epoch(self) -> None:
        """Close the bar (it leaves no line behind)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- the lines ---------------------------------------------------------------
    def started(self, *, model: str, attention: str, data: str, train: int, val: int,
                num_classes: int, input_shape: tuple[int, ...], epochs: int, device: Any,
                world_size: int, run_dir: Path) -> None:
        self.epochs = epochs
        self.log(
            f"training {model} + attention {attention} on {data} ({train} train / {val} val, "
            f"{num_classes} classes, input {input_shape}) for {epochs} epochs on {device} "
            f"x{world_size}; run dir {run_dir}"
        )

    def resumed(self, epoch: int, step_in_epoch: int) -> None:
        """``epoch`` is 0-based (the line shows it 1-based); a run with every epoch done
        (as :meth:`started` said) says that there is nothing to train."""
        if self.epochs is not None and epoch >= self.epochs:
            self.log(f"nothing to train: all {self.epochs} epochs are done (extend the run with --epochs)")
        else:
            self.log(f"resuming at epoch {epoch + 1}, step {step_in_epoch}")

    def epoch_done(self, row: Mapping[str, Any], epochs: int) -> None:
        """One line per epoch from its metrics.csv ``row``."""
        top5 = f" top5 {row['val_top5']:.4f}" if row["val_top5"] is not None else ""
        self.log(
            f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
            f"{top5}  {row['train_samples_per_s']:.1f} samples/s  {row['epoch_time_s']:.1f}s"
        )

    def interrupted(self, run_dir: Path) -> None:
        self.log(f"interrupted: resumable state saved; continue with "
                 f"`excite train --resume {run_dir}`")
