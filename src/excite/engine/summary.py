"""``summary.json``: a run's summary, put together from named parts.

Each part is one question about the run; :func:`build_summary` joins them in this order
(the keys of ``summary.json``, which ``excite compare`` and ``excite eval`` read back)::

    identity     status, run_dir, model, attention, data, seed, epochs
    progress     epochs_done, global_step
    data         num_classes, chance_acc, train_samples, val_samples, input_shape
    results      best_val_acc, best_epoch, final_val_acc, final_val_top5, final_val_loss,
                 final_train_loss, final_train_acc
    cost         params, macs, gmacs (multiply-adds per sample)
    speed        wall_time_s, train_time_s, train_samples_per_s, step_time_ms
    memory       peak_memory_mb, memory_kind
    environment  device, world_size, amp, versions
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from excite.engine import reports
from excite.engine.config import TrainConfig
from excite.engine.distributed import DistContext
from excite.engine.memory import PeakMemory
from excite.engine.setup import RunSetup
from excite.engine.state import Counters


def identity(status: str, run_dir: Path, config: TrainConfig) -> dict[str, Any]:
    """Which run this is and how it stands (``running``, ``interrupted``, ``finished``)."""
    return {"status": status, "run_dir": str(run_dir), "model": config.model,
            "attention": config.attention, "data": config.data, "seed": config.seed,
            "epochs": config.epochs}


def progress(counters: Counters) -> dict[str, Any]:
    return {"epochs_done": len(counters.history), "global_step": counters.global_step}


def data(setup: RunSetup) -> dict[str, Any]:
    return {"num_classes": setup.num_classes, "chance_acc": 1.0 / setup.num_classes,
            "train_samples": len(setup.splits.train), "val_samples": len(setup.splits.val),
            "input_shape": list(setup.input_shape)}


def results(counters: Counters) -> dict[str, Any]:
    """Best and last validation results (``None`` before the first epoch)."""
    last = counters.history[-1] if counters.history else {}
    return {
        "best_val_acc": counters.best_acc if counters.best_acc >= 0 else None,
        "best_epoch": counters.best_epoch if counters.best_epoch >= 0 else None,
        "final_val_acc": last.get("val_acc"),
        "final_val_top5": last.get("val_top5"),
        "final_val_loss": last.get("val_loss"),
        "final_train_loss": last.get("train_loss"),
        "final_train_acc": last.get("train_acc"),
    }


def cost(profile: dict[str, Any]) -> dict[str, Any]:
    macs = profile["macs"]
    return {"params": profile["params"], "macs": macs, "gmacs": macs / 1e9 if macs is not None else None}


def speed(counters: Counters, wall_time_s: float) -> dict[str, Any]:
    """Wall time of the run, time in training epochs, samples/s and mean optimizer step."""
    c = counters
    return {
        "wall_time_s": wall_time_s,
        "train_time_s": c.train_time,
        "train_samples_per_s": c.train_samples / c.train_time if c.train_time else None,
        "step_time_ms": 1000 * c.step_time / c.global_step if c.global_step else None,
    }


def memory(peak: PeakMemory) -> dict[str, Any]:
    return {"peak_memory_mb": peak.peak_mb(), "memory_kind": peak.kind}


def environment(ctx: DistContext, amp: str | None) -> dict[str, Any]:
    return {"device": str(ctx.device), "world_size": ctx.world_size, "amp": amp,
            "versions": reports.versions()}


def build_summary(status: str, *, run_dir: Path, config: TrainConfig, setup: RunSetup,
                  counters: Counters, wall_time_s: float, peak: PeakMemory,
                  ctx: DistContext) -> dict[str, Any]:
    """The summary of a run in its current state (see the module docstring for the keys)."""
    return {
        **identity(status, run_dir, config),
        **progress(counters),
        **data(setup),
        **results(counters),
        **cost(setup.profile),
        **speed(counters, wall_time_s),
        **memory(peak),
        **environment(ctx, config.amp),
    }
