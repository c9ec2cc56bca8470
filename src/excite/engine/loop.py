"""One epoch of training steps (the rest of an epoch, for a run resumed mid-epoch).

A step is the usual ``zero_grad -> forward (autocast) -> loss -> backward -> step`` with a
GradScaler for fp16 on CUDA, then one scheduler step. After every step the loop updates
the :class:`~excite.engine.state.Counters` and the epoch's meter, advances the progress
bar and calls ``after_step``, which runs the callbacks and says whether to stop.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

import torch

from excite.engine.batches import autocast, to_device
from excite.engine.metrics import ClassificationMeter
from excite.engine.progress import Progress
from excite.engine.setup import RunSetup
from excite.engine.state import Counters


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
                after_step: Callable[[], bool]) -> EpochResult:
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
        after_step: called after each step; returning True stops the epoch there.
    """
    setup.train_module.train()
    t_epoch = time.perf_counter()
    samples = 0
    for x, y in batches:
        x, y = to_device(x, y, device, setup.memory_format)
        t_step = time.perf_counter()
        logits, loss = train_step(setup, x, y, device)
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
        if after_step():
            elapsed = time.perf_counter() - t_epoch
            counters.train_time += elapsed
            return EpochResult(False, elapsed, samples)
    elapsed = time.perf_counter() - t_epoch
    counters.train_time += elapsed
    return EpochResult(True, elapsed, samples)
