"""Training: :func:`fit` runs a :class:`Trainer`, which drives the engine's pieces.

One function for single-process and DDP runs. The pieces, each in its own module:

- :mod:`~excite.engine.setup`: data, model, optimizer, schedule (:class:`RunSetup`);
- :mod:`~excite.engine.loop`: one epoch of optimizer steps;
- :mod:`~excite.engine.evaluate`: the validation loop (the one ``excite eval`` runs);
- :mod:`~excite.engine.state`: counters and the resumable ``state.pt``;
- :mod:`~excite.engine.rundir`: the run directory's files;
- :mod:`~excite.engine.summary`: ``summary.json``;
- :mod:`~excite.engine.schedule`: learning rate, seeds and data order per epoch;
- :mod:`~excite.engine.progress`, :mod:`~excite.engine.signals`,
  :mod:`~excite.engine.memory`: reporting, Ctrl-C, peak memory.

Determinism and exact resumption: model weights are seeded by ``seed``; at the start of
epoch ``e`` the global RNGs are re-seeded from ``(seed, e)`` and the data order is the
permutation ``DistributedSampler(seed=seed).set_epoch(e)`` draws (the same permutation for
one process or N; rank r takes every N-th index). A resumable state saved mid-epoch
records how many batches of the epoch are done, the partial epoch sums and the RNG
states, so on CPU an interrupted-and-resumed run ends with the same metrics as an
uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from excite.engine import distributed as dist_utils
from excite.engine.batches import make_loader
from excite.engine.builders import Splits
from excite.engine.config import RESUME_OVERRIDABLE, TrainConfig
from excite.engine.evaluate import evaluation_loop
from excite.engine.loop import EpochResult, train_epoch
from excite.engine.memory import PeakMemory
from excite.engine.metrics import ClassificationMeter
from excite.engine.progress import Progress
from excite.engine.rundir import RunDirectory
from excite.engine.schedule import epoch_indices, epoch_seed, lr_factor, mean_lr, seed_everything
from excite.engine.setup import RunSetup, prepare_run
from excite.engine.signals import StopRequest
from excite.engine.state import Counters, ResumePoint, SavedState, meter_sums, training_state
from excite.engine.summary import build_summary


class Callback:
    """Hooks called on every rank; override what you need (raise to stop training)."""

    def on_step_end(self, trainer: Trainer) -> None:  # noqa: B027 - optional hook
        """After every optimizer step (``trainer.global_step`` counts it already)."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:  # noqa: B027
        """After an epoch's validation and files; ``row`` is its metrics.csv row."""


class Trainer:
    """One training run; use :func:`fit` rather than this class directly.

    Attributes:
        config: the run's settings.
        run_dir: the run directory's path; ``files`` owns what is in it.
        ctx: this process's place in the process group.
        callbacks: :class:`Callback` objects, called in order.
        log: rank 0's log function (a no-op on other ranks).
        counters: epoch, step and time counters (also as ``epoch``, ``step_in_epoch``,
            ``global_step``, ``history``).
        setup: the model, optimizer and data, once :meth:`start` has built them.
        meter: running sums of the current epoch (``None`` between epochs).
        stop: the stop flag (set by Ctrl-C, or by a callback through ``stop.request()``).
    """

    def __init__(self, config: TrainConfig, *, splits: Splits | None, model: nn.Module | None,
                 run_dir: Path, resume: bool, callbacks: Sequence[Callback],
                 log: Callable[[str], None]) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.files = RunDirectory(self.run_dir)
        self.resume = resume
        self.callbacks = list(callbacks)
        self.given_splits = splits  # None: built from config
        self.given_model = model
        self.ctx = dist_utils.setup(config.device)
        self.progress = Progress(self.ctx.is_main, config.quiet, log, log_interval=config.log_interval)
        self.log = self.progress.log
        self.stop = StopRequest(log=self.log)
        self.peak = PeakMemory(self.ctx.device)
        self.t_start = time.perf_counter()
        self.counters = Counters()
        self.setup: RunSetup | None = None
        self.meter: ClassificationMeter | None = None
        self.resume_point: ResumePoint | None = None

    # -- what callbacks read -------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.counters.epoch

    @property
    def step_in_epoch(self) -> int:
        return self.counters.step_in_epoch

    @property
    def global_step(self) -> int:
        return self.counters.global_step

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.counters.history

    @property
    def stop_requested(self) -> bool:
        return self.stop.requested

    def _prepared(self) -> RunSetup:
        if self.setup is None:
            raise RuntimeError("the run is not set up yet (Trainer.start has not run)")
        return self.setup

    # -- the run -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to ``config.epochs`` and return the summary.

        Raises:
            KeyboardInterrupt: after saving a resumable state, when stopped.
        """
        try:
            self.start()
            with self.stop:
                while self.counters.epoch < self.config.epochs:
                    if not self.train_one_epoch():
                        raise KeyboardInterrupt
            summary = self.write_summary("finished")
            dist_utils.barrier(self.ctx)
            return summary
        except KeyboardInterrupt:
            if self.setup is not None:
                self.save_interrupted()
            raise
        finally:
            dist_utils.teardown(self.ctx)

    def start(self) -> None:
        """Build the run (restoring a saved state), write config.yaml, say what runs."""
        saved = None
        if self.resume:
            saved = SavedState(self.files.state_path)
            saved.check(world_size=self.ctx.world_size, epochs=self.config.epochs)
            self.counters = saved.counters()
            self.resume_point = saved.resume_point()
        self.setup = setup = prepare_run(self.config, self.ctx, splits=self.given_splits,
                                         model=self.given_model, saved=saved)
        if self.ctx.is_main:
            self.files.create(self.config)
        cfg, splits = self.config, setup.splits
        self.progress.started(
            model=cfg.model if self.given_model is None else type(self.given_model).__name__,
            attention=cfg.attention, data=getattr(splits.info, "name", cfg.data),
            train=len(splits.train), val=len(splits.val), num_classes=setup.num_classes,
            input_shape=setup.input_shape, epochs=cfg.epochs, device=self.ctx.device,
            world_size=self.ctx.world_size, run_dir=self.run_dir)
        if self.resume:
            self.progress.resumed(self.counters.epoch, self.counters.step_in_epoch)

    def train_one_epoch(self) -> bool:
        """Run the rest of the current epoch and end it; False when stopped early."""
        setup, cfg, ctx, counters = self._prepared(), self.config, self.ctx, self.counters
        mid_epoch = counters.step_in_epoch > 0
        if not mid_epoch:
            seed_everything(epoch_seed(cfg.seed, counters.epoch))
        self.meter = ClassificationMeter(setup.num_classes)
        if self.resume_point is not None:
            self.resume_point.apply(self.meter, mid_epoch=mid_epoch, is_main=ctx.is_main)
            self.resume_point = None
        indices = epoch_indices(setup.splits.train, seed=cfg.seed, epoch=counters.epoch,
                                rank=ctx.rank, world_size=ctx.world_size)
        batches = make_loader(setup.splits.train, indices[counters.step_in_epoch * setup.local_batch:],
                              batch_size=setup.local_batch, workers=cfg.workers, device=ctx.device,
                              seed=cfg.seed)
        self.progress.start_epoch(counters.epoch, cfg.epochs, setup.steps_per_epoch,
                                  counters.step_in_epoch)
        try:
            result = train_epoch(setup, batches, counters=counters, meter=self.meter,
                                 device=ctx.device, world_size=ctx.world_size,
                                 progress=self.progress, after_step=self._after_step)
        finally:
            self.progress.end_epoch()
        if not result.finished:
            return False
        self.end_epoch(result)
        return True

    def _after_step(self) -> bool:
        for callback in self.callbacks:
            callback.on_step_end(self)
        return dist_utils.any_true(self.stop.requested, self.ctx)

    def end_epoch(self, result: EpochResult) -> dict[str, Any]:
        """Validate, record the epoch, save its files (rank 0), log it, call the callbacks."""
        setup, cfg, ctx = self._prepared(), self.config, self.ctx
        assert self.meter is not None
        train = self.meter
        train.all_reduce()
        val = evaluation_loop(setup.eval_module, setup.splits.val, num_classes=setup.num_classes,
                              batch_size=setup.local_batch, device=ctx.device, workers=cfg.workers,
                              amp=setup.amp_dtype, memory_format=setup.memory_format, dist=ctx,
                              seed=cfg.seed)
        row = {
            "epoch": self.counters.epoch + 1,
            "train_loss": train.loss,
            "train_acc": train.accuracy,
            "val_loss": val.loss,
            "val_acc": val.accuracy,
            "val_top5": val.top5,
            "lr": mean_lr(setup.scheduler, self.counters.global_step - setup.steps_per_epoch,
                          self.counters.global_step),  # the rate the epoch's steps used
            "epoch_time_s": result.time_s,
            "train_samples_per_s": result.samples / max(result.time_s, 1e-9),
        }
        improved = self.counters.finish_epoch(row)
        self.meter = None
        if ctx.is_main:
            self.files.save_epoch(model=setup.model, history=self.counters.history, improved=improved,
                                  state=self.state(), summary=self.summary("running"))
        self.progress.epoch_done(row, cfg.epochs)
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)
        return row

    # -- saving --------------------------------------------------------------------
    def wall_time(self) -> float:
        """Seconds of this run so far, earlier sessions of a resumed run included."""
        return self.counters.prior_wall + (time.perf_counter() - self.t_start)

    def state(self) -> dict[str, Any]:
        """The resumable state now (what ``state.pt`` holds)."""
        setup = self._prepared()
        return training_state(
            model=setup.model, optimizer=setup.optimizer, scheduler=setup.scheduler,
            scaler=setup.scaler, counters=self.counters,
            partial=meter_sums(self.meter, setup.num_classes), wall_time=self.wall_time(),
            world_size=self.ctx.world_size)

    def save_state(self) -> None:
        """Write ``state.pt`` (rank 0)."""
        if self.ctx.is_main:
            self.files.save_state(self.state())

    def summary(self, status: str) -> dict[str, Any]:
        return build_summary(status, run_dir=self.run_dir, config=self.config, setup=self._prepared(),
                             counters=self.counters, wall_time_s=self.wall_time(), peak=self.peak,
                             ctx=self.ctx)

    def write_summary(self, status: str) -> dict[str, Any]:
        """The summary; rank 0 writes it, and draws curves.png once the run has stopped."""
        summary = self.summary(status)
        if self.ctx.is_main:
            cfg = self.config
            self.files.save_summary(summary, curves=self.counters.history if status != "running" else (),
                                    title=f"{cfg.model} + {cfg.attention} on {cfg.data}")
        return summary

    def save_interrupted(self) -> None:
        """Save a resumable state and an ``interrupted`` summary, and say how to resume."""
        if self.meter is not None and self.ctx.distributed and self.stop.requested:
            self.meter.all_reduce()  # every rank stopped at the same step
        self.save_state()
        self.write_summary("interrupted")
        self.progress.interrupted(self.run_dir)


def resolve_resume(run_dir: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The saved config of ``run_dir`` with the allowed ``overrides`` applied.

    Raises:
        ExciteError: ``run_dir`` is not a run directory.
        ValueError: an override of a field that must not change on resume.
    """
    values = RunDirectory(run_dir).read_config().to_dict()
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key in RESUME_OVERRIDABLE:
            values[key] = value
        elif values.get(key) != value:
            raise ValueError(
                f"cannot change {key} when resuming (run has {values.get(key)!r}, got {value!r}); "
                f"only {', '.join(sorted(RESUME_OVERRIDABLE))} may change"
            )
    return TrainConfig.from_dict(values)


def fit(config: TrainConfig, *, splits: Splits | None = None, model: nn.Module | None = None,
        run_dir: str | Path | None = None, resume: bool = False,
        callbacks: Sequence[Callback] = (), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``config`` end to end and return the run's summary (also in summary.json).

    Args:
        config: the run's settings.
        splits: datasets to use instead of ``config.data`` (tests, notebooks).
        model: a model to use instead of ``config.model`` (must fit the data).
        run_dir: where files go (default ``config.out / config.run_name``).
        resume: continue from ``run_dir/state.pt``.
        callbacks: :class:`Callback` objects.
        log: where progress lines go (rank 0 only).

    Returns:
        The summary dictionary.

    Raises:
        KeyboardInterrupt: after saving a resumable state, when interrupted.
        ExciteError: missing or corrupt state when resuming.
        ValueError: unknown names or a model that does not fit the data.
    """
    path = Path(run_dir) if run_dir is not None else Path(config.out) / config.run_name
    files = RunDirectory(path)
    if resume and not files.has_state():
        files.load_state()  # raises the clear "missing" error before any setup
    if config.tensorboard:  # checks the package before anything is built
        from excite.engine.tensorboard import TensorBoardLogger

        callbacks = [*callbacks, TensorBoardLogger()]
    trainer = Trainer(config, splits=splits, model=model, run_dir=path, resume=resume,
                      callbacks=callbacks, log=log)
    return trainer.run()


__all__ = ["Callback", "Trainer", "fit", "resolve_resume", "lr_factor", "epoch_seed"]
