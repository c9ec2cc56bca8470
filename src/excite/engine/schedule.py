"""What changes from step to step and epoch to epoch: learning rate, seeds, data order.

Exact resumption rests on these three being pure functions of the run's ``seed``, the
epoch and the optimizer step:

- the learning rate at step ``t`` is ``lr * lr_factor(t, ...)`` (:func:`make_scheduler`);
- at the start of epoch ``e`` the global RNGs get ``epoch_seed(seed, e)``;
- the data order of epoch ``e`` is :func:`epoch_indices`: the permutation
  ``DistributedSampler(seed=seed).set_epoch(e)`` draws, the same one for one process or
  N (rank r takes every N-th index).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from excite.engine.config import TrainConfig


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed the global RNGs get at the start of ``epoch`` (a fixed mix of both)."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**31 - 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_indices(dataset: Dataset, *, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1) -> list[int]:
    """The sample indices process ``rank`` of ``world_size`` trains on in ``epoch``."""
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str,
              steps_per_epoch: int, step_epochs: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, times
    cosine ``0.5 (1 + cos(pi t / T))``, step ``0.1 ** floor(epoch / step_epochs)`` or 1.
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "cosine":
        t = min(step, total_steps)
        return warm * 0.5 * (1.0 + math.cos(math.pi * t / max(total_steps, 1)))
    if schedule == "step":
        return warm * 0.1 ** ((step // max(steps_per_epoch, 1)) // step_epochs)
    return warm


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step :func:`lr_factor` schedule over ``config.epochs * steps_per_epoch`` steps.

    The multiplier is a closure, not a callable object, so the scheduler's state dict holds
    only counters (a resumed run rebuilds the closure from its config).
    """
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    schedule, step_epochs = config.schedule, config.step_epochs

    def factor(step: int) -> float:
        return lr_factor(step, total_steps=total, warmup_steps=warmup, schedule=schedule,
                         steps_per_epoch=steps_per_epoch, step_epochs=step_epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def mean_lr(scheduler: torch.optim.lr_scheduler.LambdaLR, start: int, stop: int) -> float:
    """Mean learning rate (first parameter group) of optimizer steps ``start .. stop - 1``.

    Step ``t`` (0-based) runs at ``base_lr * factor(t)``; after it the scheduler already
    holds the next step's rate, so an epoch's rate is read from the schedule, not from
    the optimizer. ``stop <= start``: the rate of step ``start``.
    """
    base, factor = scheduler.base_lrs[0], scheduler.lr_lambdas[0]
    steps = range(max(start, 0), max(stop, start + 1))
    return base * sum(factor(t) for t in steps) / len(steps)


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, Nesterov) or AdamW at ``config.lr`` with ``config.weight_decay``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
