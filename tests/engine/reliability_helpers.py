"""Shared pieces of the reliability tests (issue 13): small runs on the blob data.

``run(tmp, name, ...)`` is one :func:`excite.engine.fit` of TinyNet on 64 blob images
(batch 16: 4 steps per epoch, 2 epochs), with the model built right after
``torch.manual_seed(123)`` so that every run starts from the same weights. curves.png is
not drawn (matplotlib's drawing is most of a tiny run's time and these tests do not look
at it). References are uninterrupted runs: an interrupted-and-resumed run must end with
exactly their metrics and weights.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from engine_helpers import TinyNet, blob_splits
from excite.engine import Callback, TrainConfig, fit
from excite.engine.checkpoint import load_weights
from excite.engine.rundir import RunDirectory

CONFIG = dict(epochs=2, batch_size=16, lr=0.05, quiet=True, device="cpu", seed=7)
KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr")


class Killed(BaseException):
    """Stands for SIGKILL: no handler of the engine catches it, so nothing more is written."""


class At(Callback):
    """Calls ``action(trainer)`` after global step ``step``."""

    def __init__(self, step: int, action: Callable[[Any], None]) -> None:
        self.step, self.action = step, action

    def on_step_end(self, trainer) -> None:
        if trainer.global_step == self.step:
            self.action(trainer)


def kill(_trainer) -> None:
    raise Killed


@contextlib.contextmanager
def without_curves() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunDirectory, "save_curves", lambda self, *args, **kwargs: None)
        yield


@pytest.fixture(autouse=True)
def no_curves() -> Iterator[None]:
    with without_curves():
        yield


def run(tmp: Path, name: str, *, model: Callable[[], torch.nn.Module] = TinyNet, splits=None,
        log: Callable[[str], None] = lambda m: None, **kw) -> dict:
    config = TrainConfig(**{**CONFIG, **kw.pop("config", {})})
    torch.manual_seed(123)
    return fit(config, splits=splits if splits is not None else blob_splits(), model=model(),
               run_dir=tmp / name, log=log, **kw)


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return [{k: r[k] for k in KEYS} for r in csv.DictReader(handle)]


def assert_same_run(a: Path, b: Path) -> None:
    """The same metrics.csv values and bit-identical last weights."""
    assert rows(a) == rows(b)
    wa, wb = load_weights(a / "last.safetensors"), load_weights(b / "last.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
