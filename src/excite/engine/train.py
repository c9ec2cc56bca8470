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
(``save_every`` steps, or a stop signal) records how many batches of the epoch are done,
the partial epoch sums and the RNG states, so on CPU an interrupted-and-resumed run ends
with the same metrics and weights as an uninterrupted one.

How a run ends, and what its ``summary.json`` status says:

- ``finished``: every epoch done.
- ``interrupted``: a stop signal (SIGINT, SIGTERM, SIGUSR1) or a callback's
  ``KeyboardInterrupt`` / ``stop.request()``; the state after the last step is saved.
  A second signal aborts without saving (the status stays what it was).
- ``diverged``: a non-finite loss (or weights): :class:`~excite.engine.loop.DivergedError`,
  nothing saved after the last finite step.
- ``failed``: any other error once the run directory exists (a full disk, ...).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from excite.engine import distributed as dist_utils
from excite.engine.batches import make_loader
from excite.engine.builders import Splits, data_key
from excite.engine.config import RESUME_OVERRIDABLE, TrainConfig
from excite.engine.evaluate import evaluation_loop
from excite.engine.loop import DivergedError, EpochResult, diverged_error, train_epoch
from excite.engine.memory import PeakMemory
from excite.engine.metrics import ClassificationMeter
from excite.engine.progress import Progress
from excite.engine.rundir import CUSTOM_KEYS, RunDirectory, describe_custom
from excite.engine.schedule import epoch_indices, epoch_seed, lr_factor, mean_lr, seed_everything
from excite.engine.setup import RunSetup, prepare_run
from excite.engine.signals import AbortRun, StopRequest
from excite.engine.state import Counters, ResumePoint, SavedState, meter_sums, training_state
from excite.engine.summary import build_summary
from excite.errors import ExciteError


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
        files: the run directory's files (the folder is claimed or opened by
            :meth:`start`; until then ``files.path`` is the folder asked for).
        ctx: this process's place in the process group.
        callbacks: :class:`Callback` objects, called in order.
        log: rank 0's log function (a no-op on other ranks).
        counters: epoch, step and time counters (also as ``epoch``, ``step_in_epoch``,
            ``global_step``, ``history``).
        setup: the model, optimizer and data, once :meth:`start` has built them.
        meter: running sums of the current epoch (``None`` between epochs).
        stop: the stop flag (set by a stop signal, or by a callback through
            ``stop.request()``).
        custom: what the config cannot rebuild: ``custom_model`` / ``custom_data``
            entries for a model or data given to :func:`fit` directly.
        saved_at: ``(epoch, step_in_epoch)`` of the last state saved (``None``: none yet).
    """

    def __init__(self, config: TrainConfig, *, splits: Splits | None, model: nn.Module | None,
                 run_dir: str | Path | None, resume: bool, callbacks: Sequence[Callback],
                 log: Callable[[str], None]) -> None:
        self.config = config
        self.requested_dir = Path(run_dir) if run_dir is not None else None
        self.files = RunDirectory(self.requested_dir or Path(config.out) / config.run_name)
        self.opened = False
        self.resume = resume
        self.callbacks = list(callbacks)
        self.given_splits = splits  # None: built from config
        self.given_model = model
        self.custom = custom_parts(config, model=model, splits=splits)
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
        self.saved_at: tuple[int, int] | None = None

    # -- what callbacks read -------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.files.path

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
            KeyboardInterrupt: after saving a resumable state, when stopped
                (:class:`~excite.engine.signals.AbortRun`: stopped without saving).
            DivergedError: a non-finite loss; nothing after the last finite step is saved.
        """
        try:
            self.start()  # an interrupt here has nothing to save yet
            with self.stop:
                summary = self.train_to_end()
            dist_utils.barrier(self.ctx)
            return summary
        finally:
            dist_utils.teardown(self.ctx)

    def train_to_end(self) -> dict[str, Any]:
        """The epochs left, then the ``finished`` summary; the ways a run can stop early
        are recorded in its summary (see the module docstring)."""
        try:
            try:
                while self.counters.epoch < self.config.epochs:
                    # a signal during the last validation or save: stop at this boundary
                    if dist_utils.any_true(self.stop.requested, self.ctx) or not self.train_one_epoch():
                        raise KeyboardInterrupt
            except AbortRun:
                raise
            except KeyboardInterrupt:  # a stop request or a callback's: between two steps
                self.save_interrupted()
                raise
            return self.write_summary("finished")
        except AbortRun:
            self.log(f"aborted without saving: {self.run_dir} keeps {self.describe_saved()}")
            raise
        except KeyboardInterrupt:
            raise
        except DivergedError as exc:
            raise self.diverged(exc) from None
        except Exception as exc:
            self.failed(exc)
            raise

    def start(self) -> None:
        """Open the run directory (claiming a new one, or checking the one to resume),
        build the run (restoring a saved state), write config.yaml, say what runs."""
        saved = self.read_saved() if self.resume else None
        if not self.resume:
            dist_utils.run_on_main(self.check_new, self.ctx)  # fail fast, before the setup
        self.setup = setup = prepare_run(self.config, self.ctx, splits=self.given_splits,
                                         model=self.given_model, saved=saved)
        path, notes = dist_utils.run_on_main(lambda: self.open_files(saved is not None), self.ctx)
        self.files, self.opened = RunDirectory(path), True
        cfg, splits = self.config, setup.splits
        self.progress.started(
            model=cfg.model if self.given_model is None else type(self.given_model).__name__,
            attention=cfg.attention, data=getattr(splits.info, "name", cfg.data),
            train=len(splits.train), val=len(splits.val), num_classes=setup.num_classes,
            input_shape=setup.input_shape, epochs=cfg.epochs, device=self.ctx.device,
            world_size=self.ctx.world_size, run_dir=self.run_dir)
        for note in notes:
            self.log(note)
        if setup.init_report is not None:
            report, kept = setup.init_report, setup.init_report.excluded
            shown = ", ".join(kept[:4]) + (", ..." if len(kept) > 4 else "")
            self.log(f"initialised from {cfg.init_from}: {len(report.loaded)} tensors loaded"
                     + (f", {len(kept)} left at their initial values ({shown})" if kept else ""))
        if setup.dropped:
            self.log(f"dropping the last batch of each epoch: it would hold {setup.dropped} sample "
                     f"({setup.epoch_samples + setup.dropped} training samples per process, batch "
                     f"{setup.local_batch}), and BatchNorm cannot train on a batch of one")
        if saved is not None:
            self.progress.resumed(self.counters.epoch, self.counters.step_in_epoch)

    def read_saved(self) -> SavedState | None:
        """The state to resume from (every rank reads it), or ``None`` for a run that
        stopped before saving one: it starts again from step 0 with its saved config.

        Raises:
            ExciteError: no run directory there; a run whose custom model or data was not
                given again; a corrupt, truncated or foreign state.
        """
        files = self.files
        if not files.path.is_dir():
            raise ExciteError(f"run directory not found: {files.path}")
        recorded = files.custom_parts()
        missing = {k: v for k, v in recorded.items()
                   if (k == "custom_model" and self.given_model is None)
                   or (k == "custom_data" and self.given_splits is None)}
        if missing:
            needed = ", ".join({"custom_model": "model=...", "custom_data": "splits=..."}[k] for k in missing)
            raise ExciteError(
                f"{files.path} was trained on {describe_custom(recorded)} given to excite.engine.fit, "
                f"which its config cannot rebuild; resume it with fit(config, {needed}, run_dir=..., "
                "resume=True)"
            )
        if not files.has_state():
            if not files.config_path.is_file():
                files.load_state()  # the "no resumable training state" error
            if not files.restartable():  # e.g. excite convert's weights: never trained over
                raise ExciteError(
                    f"{files.path} has no resumable training state and its status is "
                    f"{files.status()!r}, so it is not restarted (that would overwrite its weights); "
                    f"to train from its weights start a new run with --init-from {files.best_path}")
            return None
        saved = SavedState(files.state_path)
        saved.check(world_size=self.ctx.world_size, epochs=self.config.epochs)
        self.counters = saved.counters()
        self.resume_point = saved.resume_point()
        self.saved_at = (self.counters.epoch, self.counters.step_in_epoch)
        return saved

    def check_new(self) -> None:
        """Refuse, before any setup, a new run where one exists (rank 0; the atomic claim
        comes in :meth:`open_files`)."""
        if self.requested_dir is not None or self.config.name is not None:
            if self.files.holds_run() or (self.requested_dir is None and self.files.path.exists()):
                raise ExciteError(self.files.taken_message())

    def open_files(self, from_state: bool) -> tuple[str, list[str]]:
        """Rank 0: claim a new run directory (or tidy the one resumed) and write its
        config.yaml; returns the folder and the lines to log about it."""
        notes: list[str] = []
        files = self.files
        if self.resume:
            removed = files.remove_stray_temps()
            if removed:
                notes.append(f"removed {len(removed)} temporary file(s) that interrupted writes left "
                             f"in {files.path}")
            if from_state:
                repaired = files.repair_metrics(self.counters.history)
            else:
                repaired = files.repair_metrics([])
                notes.append(f"{files.path} has no saved state (it stopped before saving one): "
                             "starting it again from step 0 with its saved config")
            if repaired:
                notes.append(repaired)
            files.write_config(self.config, custom=self.custom)
        else:
            if self.requested_dir is None:
                files = RunDirectory.claim(files.path, numbered=self.config.name is None)
            files.create(self.config, custom=self.custom)
            files.remove_stray_temps()
        return str(files.path), notes

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
                                rank=ctx.rank, world_size=ctx.world_size)[:setup.epoch_samples]
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

    def _after_step(self, finite: bool) -> bool:
        if finite:
            for callback in self.callbacks:
                callback.on_step_end(self)
        stop, diverged = dist_utils.any_true_each((self.stop.requested, not finite), self.ctx)
        counters = self.counters
        if diverged and finite:  # another process's loss was not finite
            raise diverged_error("another process's loss was not finite", step=counters.global_step,
                                 epoch=counters.epoch + 1)
        every = self.config.save_every
        if (finite and not stop and every and counters.global_step % every == 0
                and counters.step_in_epoch < self._prepared().steps_per_epoch):
            self.save_state()  # (the epoch's end saves its own)
        return stop

    def end_epoch(self, result: EpochResult) -> dict[str, Any]:
        """Validate, record the epoch, save its files (rank 0), log it, call the callbacks.

        Raises:
            DivergedError: non-finite weights or validation loss (nothing is saved).
        """
        setup, cfg, ctx = self._prepared(), self.config, self.ctx
        assert self.meter is not None
        self.check_finite()
        train = self.meter
        train.all_reduce()
        val = evaluation_loop(setup.eval_module, setup.splits.val, num_classes=setup.num_classes,
                              batch_size=setup.local_batch, device=ctx.device, workers=cfg.workers,
                              amp=setup.amp_dtype, memory_format=setup.memory_format, dist=ctx,
                              seed=cfg.seed)
        if not math.isfinite(val.loss):
            raise diverged_error(f"the validation loss at the end of the epoch is {val.loss}",
                                 step=self.counters.global_step, epoch=self.counters.epoch + 1)
        row = {
            "epoch": self.counters.epoch + 1,
            "train_loss": train.loss,
            "train_acc": train.accuracy,
            "val_loss": val.loss,
            "val_acc": val.accuracy,
            "val_top5": val.top5,
            "lr": mean_lr(setup.scheduler, self.counters.epoch * setup.steps_per_epoch,
                          self.counters.global_step),  # the rate the epoch's steps used
            "epoch_time_s": result.time_s,
            "train_samples_per_s": result.samples / max(result.time_s, 1e-9),
        }
        improved = self.counters.finish_epoch(row)
        self.meter = None
        if ctx.is_main:
            self.files.save_epoch(model=setup.model, history=self.counters.history, improved=improved,
                                  state=self.state(), summary=self.summary("running"))
        self.saved_at = (self.counters.epoch, 0)
        self.progress.epoch_done(row, cfg.epochs)
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)
        return row

    # -- saving --------------------------------------------------------------------
    def wall_time(self) -> float:
        """Seconds of this run so far, earlier sessions of a resumed run included."""
        return self.counters.prior_wall + (time.perf_counter() - self.t_start)

    def state(self, meter: ClassificationMeter | None = None) -> dict[str, Any]:
        """The resumable state now (what ``state.pt`` holds), with the epoch sums of
        ``meter`` (default: :attr:`meter`)."""
        setup = self._prepared()
        return training_state(
            model=setup.model, optimizer=setup.optimizer, scheduler=setup.scheduler,
            scaler=setup.scaler, counters=self.counters,
            partial=meter_sums(meter if meter is not None else self.meter, setup.num_classes),
            wall_time=self.wall_time(), world_size=self.ctx.world_size)

    def check_finite(self) -> None:
        """Raise :class:`DivergedError` when a weight or buffer of the model is not finite
        (on every rank when any rank's is: BatchNorm buffers are per process)."""
        bad = next((name for name, tensor in self._prepared().model.state_dict().items()
                    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())), None)
        if dist_utils.any_true(bad is not None, self.ctx):
            raise diverged_error(f"{bad or 'a weight of another process'} is not finite after that step",
                                 step=self.counters.global_step, epoch=self.counters.epoch + 1)

    def save_state(self, *, reduce: bool = True) -> None:
        """Write ``state.pt`` now, between two steps (rank 0 writes; when distributed every
        rank calls this, and with ``reduce`` the epoch sums are all-reduced into a copy).

        Raises:
            DivergedError: the weights are not finite (nothing is written).
        """
        self.check_finite()
        meter = self.meter
        if meter is not None and self.ctx.distributed and reduce:
            meter = copy.deepcopy(meter)
            meter.all_reduce()
        if self.ctx.is_main:
            self.files.save_state(self.state(meter))
        self.saved_at = (self.counters.epoch, self.counters.step_in_epoch)

    def describe_saved(self) -> str:
        """The last saved state, in words (for log lines and errors)."""
        if self.saved_at is None:
            return "no saved state (--resume starts it again from step 0)"
        epoch, step = self.saved_at
        if step == 0:
            return f"its state at the end of epoch {epoch}" if epoch else "its state before the first step"
        return f"its state at epoch {epoch + 1}, step {step}"

    def summary(self, status: str, **extra: Any) -> dict[str, Any]:
        summary = build_summary(status, run_dir=self.run_dir, config=self.config, setup=self._prepared(),
                                counters=self.counters, wall_time_s=self.wall_time(), peak=self.peak,
                                ctx=self.ctx)
        if self.custom:  # what really ran, not the config's defaults
            summary.update(model=self.custom.get("custom_model", summary["model"]),
                           data=self.custom.get("custom_data", summary["data"]), **self.custom)
        summary.update(extra)
        return summary

    def write_summary(self, status: str, **extra: Any) -> dict[str, Any]:
        """The summary; rank 0 writes it, and draws curves.png once the run has stopped."""
        summary = self.summary(status, **extra)
        if self.ctx.is_main:
            cfg = self.config
            self.files.save_summary(summary, curves=self.counters.history if status != "running" else (),
                                    title=f"{summary['model']} + {cfg.attention} on {summary['data']}")
        return summary

    def save_interrupted(self) -> None:
        """Save a resumable state and an ``interrupted`` summary, and say how to resume.
        When distributed, the epoch sums are all-reduced only if every rank stopped at
        the same step (a stop request; a callback's interrupt may be one rank's)."""
        self.save_state(reduce=self.stop.requested)
        self.write_summary("interrupted")
        self.progress.interrupted(self.run_dir)

    def _record_end(self, status: str, **extra: Any) -> None:
        """Best effort: the summary of a run that stops with an error (which must win)."""
        if self.setup is None or not self.opened:
            return
        try:
            self.write_summary(status, **extra)
        except Exception as exc:  # e.g. the disk is still full
            self.log(f"could not record status {status!r} in {self.files.summary_path}: {exc}")

    def diverged(self, exc: DivergedError) -> DivergedError:
        """Record a ``diverged`` run and return the error to raise (it says what is kept)."""
        self._record_end("diverged", diverged_at_step=exc.step)
        return DivergedError(f"{exc}; stopped there, nothing after the last finite step is saved: "
                             f"{self.run_dir} keeps {self.describe_saved()}; try a lower learning rate (--lr)",
                             step=exc.step, epoch=exc.epoch)

    def failed(self, exc: Exception) -> None:
        """Record a ``failed`` run (its error on one line in the summary)."""
        self._record_end("failed", error=" ".join(f"{type(exc).__name__}: {exc}".split()))


def custom_parts(config: TrainConfig, *, model: nn.Module | None, splits: Splits | None) -> dict[str, str]:
    """The ``custom_model`` / ``custom_data`` entries of a run given its own model or data
    (data built by :func:`~excite.engine.builders.build_splits` from this config's data
    fields are not custom)."""
    custom: dict[str, str] = {}
    if model is not None:
        custom[CUSTOM_KEYS[0]] = type(model).__name__
    if splits is not None and splits.data_key != data_key(config):
        custom[CUSTOM_KEYS[1]] = str(getattr(splits.info, "name", None) or type(splits.train).__name__)
    return custom


def resolve_resume(run_dir: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The saved config of ``run_dir`` with the allowed ``overrides`` applied.

    Raises:
        ExciteError: ``run_dir`` is not a run directory.
        ValueError: an override of a field that must not change on resume.
    """
    values = RunDirectory(run_dir).read_config().to_dict()  # refuses custom-model/data runs
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
        splits: datasets to use instead of ``config.data`` (tests, notebooks); recorded
            as ``custom_data`` unless :func:`~excite.engine.builders.build_splits` built
            them from this config.
        model: a model to use instead of ``config.model`` (must fit the data); recorded
            as ``custom_model`` (its class name), which ``excite eval`` and ``excite train
            --resume`` refuse (they cannot rebuild it).
        run_dir: where files go. Default: a new folder ``config.out / config.run_name``,
            created atomically: a taken default name becomes ``NAME-2``, ``NAME-3``, ...,
            and a taken ``config.name`` is refused. A folder given here must not hold a
            run already (unless ``resume``).
        resume: continue the run in ``run_dir`` from its ``state.pt``; a run that
            stopped before saving a state starts again from step 0 (``config`` is used
            as given: read it with :func:`resolve_resume` to continue the saved one).
        callbacks: :class:`Callback` objects.
        log: where progress lines go (rank 0 only).

    Returns:
        The summary dictionary.

    Raises:
        KeyboardInterrupt: after saving a resumable state, when interrupted (a second
            signal: :class:`~excite.engine.signals.AbortRun`, nothing saved).
        DivergedError: a non-finite loss or weights (``summary.json`` says "diverged").
        ExciteError: a run directory that is taken, or missing or corrupt state when
            resuming; a full disk (``summary.json`` says "failed").
        ValueError: unknown names or a model that does not fit the data.
    """
    if config.tensorboard:  # checks the package before anything is built
        from excite.engine.tensorboard import TensorBoardLogger

        callbacks = [*callbacks, TensorBoardLogger()]
    trainer = Trainer(config, splits=splits, model=model, run_dir=run_dir, resume=resume,
                      callbacks=callbacks, log=log)
    return trainer.run()


__all__ = ["Callback", "DivergedError", "Trainer", "fit", "resolve_resume", "lr_factor", "epoch_seed"]
