"""Training engine: train/evaluate loops, checkpoints, metrics, DDP, comparisons.

Main entry points:

- :func:`fit` (``excite train``): train a :class:`TrainConfig`, write a run directory.
- :func:`evaluate` / :func:`evaluate_run` (``excite eval``).
- :func:`run_compare` (``excite compare``).

The pieces behind :func:`fit` (each its own module): ``setup`` (data, model, optimizer,
schedule), ``loop`` (one epoch of steps), ``evaluate`` (the validation loop), ``state``
(counters, ``state.pt``), ``rundir`` (the run directory's files), ``summary``
(``summary.json``), ``schedule`` (learning rate, seeds, data order), ``progress``,
``signals``, ``memory``, ``batches``; ``train`` ties them together.
"""

from __future__ import annotations

from excite.engine.builders import Splits
from excite.engine.compare import run_compare
from excite.engine.config import TrainConfig
from excite.engine.evaluate import EvalResult, evaluate, evaluate_run
from excite.engine.metrics import ClassificationMeter
from excite.engine.rundir import RunDirectory
from excite.engine.train import Callback, fit, resolve_resume

__all__ = [
    "Callback",
    "ClassificationMeter",
    "EvalResult",
    "RunDirectory",
    "Splits",
    "TrainConfig",
    "evaluate",
    "evaluate_run",
    "fit",
    "resolve_resume",
    "run_compare",
]
