"""One epoch of training steps (the rest of an epoch, for a run resumed mid-epoch).

A step is the usual ``zero_grad -> forward (autocast) -> loss -> backward -> step`` with a
GradScaler for fp16 on CUDA, then one scheduler step. After every step the loop updates
the :class:`~excite.engine.state.Counters` and the epoch's meter, advances the progress
bar and calls ``after_step``, which runs the callbacks, saves ``--save-every`` states and
says whether to stop.

Two things end an epoch early with an exception:

- a loss that is not finite (NaN or infinite): :class:`DivergedError`, raised before the
  step is counted, so nothing after the last finite step is ever saved;
- an interrupt (``KeyboardInterrupt``) anywhere between two ``after_step`` calls (loading
  a batch, the step, the bookkeeping): :class:`~excite.engine.signals.AbortRun`, since a
  state saved there (RNG drawn, counters half-updated) would not resume to the same run.
  An interrupt raised by ``after_step`` itself (a callback) comes between two steps and
  stays a ``KeyboardInterrupt``: the trainer saves there.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable

import torch

from excite.engine.batches import autocast, to_device
from excite.engine.metrics import ClassificationMeter
from excite.engine.progress import Progress
from excite.engine.setup import RunSetup
from excite.engine.signals import AbortRun
from excite.engine.state import Counters
from excite.errors import ExciteError


class DivergedError(ExciteError):
    """Training produced a non-finite loss (or non-finite weights).

    Attributes:
        step: the 1-based global step whose loss was not finite (or the last step done,
            for weights found non-finite when saving).
        epoch: its 1-based epoch.
    """

    def __init__(self, message: str, *, step: int, epoch: int) -> None:
        super().__init__(message)
        self.step = step
        self.epoch = epoch


@dataclasses.dataclass(frozen=True)
class EpochResult:
    """How an epoch's run of steps ended.

    Attributes:
        finished: False when ``after_step`` asked to stop before the loader ran out.
        time_s: seconds this call spent (data loading included).
        samples: training samples it processed, over all processes.
    """

    finished: bool
    time_s: float
    samples: int


def diverged_error(what: str, *, step: int, epoch: int) -> DivergedError:
    """``training diverged at step S (epoch E): WHAT``."""
    return DivergedError(f"training diverged at step {step} (epoch {epoch}): {what}", step=step, epoch=epoch)


def train_step(setup: RunSetup, x: torch.Tensor, y: torch.Tensor,
               device: torch.device) -> tuple[torch.Tensor, float]:
    """One optimizer step and one scheduler step on the batch (x, y); (logits, loss)."""
    setup.optimizer.zero_grad(set_to_none=True)
    with autocast(device, setup.amp_dtype):
        logits = setup.train_module(x)
        loss = setup.loss_fn(logits.float(), y)
    if setup.scaler is not None:
        setup.scaler.scale(loss).backward()
        setup.scaler.step(setup.optimizer)
        setup.scaler.update()
    else:
        loss.backward()
        setup.optimizer.step()
    setup.scheduler.step()
    return logits, float(loss.detach())


def train_epoch(setup: RunSetup, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                counters: Counters, meter: ClassificationMeter, device: torch.device,
                world_size: int, progress: Progress,
                after_step: Callable[[bool], bool]) -> EpochResult:
    """Train on ``batches`` (this process's share of the epoch's remaining steps).

    Args:
        setup: the run's model, optimizer and schedule.
        batches: (x, y) batches of this process.
        counters: advanced after every step (``step_in_epoch``, ``global_step``,
            ``step_time``, ``train_samples``; ``train_time`` once at the end).
        meter: the epoch's running loss/accuracy sums (this process's share).
        device: where to train.
        world_size: number of processes (samples are counted over all of them).
        progress: bar to advance.
        after_step: called after each step with whether its loss was finite; returning
            True stops the epoch there (it may raise :class:`DivergedError` itself, e.g.
            when another process's loss was not finite).

    Raises:
        DivergedError: a step's loss was not finite (that step is not counted).
        AbortRun: an interrupt between two ``after_step`` calls.
    """
    setup.train_module.train()
    t_epoch = time.perf_counter()
    samples = 0
    batch_iter = None
    while True:
        try:  # from here to after_step the run is not at a point it can be saved at
            if batch_iter is None:
                batch_iter = iter(batches)
            batch = next(batch_iter, None)
            if batch is None:
                break
            x, y = to_device(*batch, device, setup.memory_format)
            t_step = time.perf_counter()
            logits, loss = train_step(setup, x, y, device)
            finite = math.isfinite(loss)
            if finite:  # a non-finite step is never counted (nor saved)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                now = time.perf_counter()
                counters.step_time += now - t_step
                meter.update(logits, y, loss)
                counters.step_in_epoch += 1
                counters.global_step += 1
                samples += int(y.numel()) * world_size
                counters.train_samples += int(y.numel()) * world_size
                progress.step(loss, meter.accuracy, samples / max(now - t_epoch, 1e-9))
        except AbortRun:
            raise
        except KeyboardInterrupt as exc:
            raise AbortRun(f"interrupted in the middle of step {counters.global_step + 1}, where no "
                           "state can be saved") from exc
        stop = after_step(finite)
        if not finite:
            raise diverged_error(f"the loss of step {counters.global_step + 1} is {loss}",
                                 step=counters.global_step + 1, epoch=counters.epoch + 1)
        if stop:
            elapsed = time.perf_counter() - t_epoch
            counters.train_time += elapsed
            return EpochResult(False, elapsed, samples)
    elapsed = time.perf_counter() - t_epoch
    counters.train_time += elapsed
    return EpochResult(True, elapsed, samples)
