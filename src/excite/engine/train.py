"""The training loop: one function, :func:`fit`, for single-process and DDP runs.

Determinism and exact resumption: model weights are seeded by ``seed``; at the start of
epoch ``e`` the global RNGs are re-seeded from ``(seed, e)`` and the data order is the
permutation ``DistributedSampler(seed=seed).set_epoch(e)`` draws (the same permutation for
one process or N; rank r takes every N-th index). A resumable state saved mid-epoch
records how many batches of the epoch are done, the partial epoch sums and the RNG
states, so on CPU an interrupted-and-resumed run ends with the same metrics as an
uninterrupted one.

Run directory (written by rank 0 only)::

    config.yaml  metrics.csv  summary.json  curves.png
    best.safetensors  last.safetensors  state.pt
"""

from __future__ import annotations

import contextlib
import math
import random
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from excite.engine import checkpoint as ckpt
from excite.engine import distributed as dist_utils
from excite.engine import reports
from excite.engine.builders import Splits, build_model, build_splits, check_model_fits, check_names, profile_model
from excite.engine.config import RESUME_OVERRIDABLE, TrainConfig, dump_yaml, load_yaml
from excite.engine.metrics import ClassificationMeter
from excite.errors import ExciteError

METRIC_COLUMNS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr",
    "epoch_time_s", "train_samples_per_s",
)
_STATE_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "step_in_epoch", "global_step")


class Callback:
    """Hooks called on every rank; override what you need (raise to stop training)."""

    def on_step_end(self, trainer: Trainer) -> None:  # noqa: B027 - optional hook
        pass

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:  # noqa: B027
        pass


class _ListSampler(Sampler[int]):
    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = list(indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed the global RNGs get at the start of ``epoch`` (a fixed mix of both)."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**31 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


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


class PeakMemory:
    """Peak memory of the run: CUDA ``max_memory_allocated`` or the process's peak RSS.

    On Linux the RSS high-water mark is reset at the start (``/proc/self/clear_refs``), so
    runs in one process (``excite compare``) are measured separately; elsewhere the
    process's lifetime ``ru_maxrss`` is reported.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "peak_rss"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")
            except OSError:
                self.kind = "lifetime_max_rss"

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / (2**20 if sys.platform == "darwin" else 1024)


class _Progress:
    """tqdm bar on a TTY; plain lines otherwise or when quiet; silent off rank 0."""

    def __init__(self, enabled: bool, quiet: bool, log: Callable[[str], None]) -> None:
        self.enabled = enabled
        self.log = log if enabled else (lambda _msg: None)
        self.use_bar = enabled and not quiet and sys.stderr.isatty()
        self.bar: Any = None

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
        if self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}",
                            leave=False, dynamic_ncols=True)

    def step(self, loss: float, acc: float, samples_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", sps=f"{samples_per_s:.1f}")

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Trainer:
    """State of one training run; use :func:`fit` rather than this class directly."""

    def __init__(self, config: TrainConfig, *, splits: Splits | None, model: nn.Module | None,
                 run_dir: Path, resume: bool, callbacks: Sequence[Callback],
                 log: Callable[[str], None]) -> None:
        self.config = config
        self.run_dir = run_dir
        self.resume = resume
        self.callbacks = list(callbacks)
        self.ctx = dist_utils.setup(config.device)
        self.log = log if self.ctx.is_main else (lambda _msg: None)
        self._splits = splits
        self._model = model
        self.stop_requested = False
        # counters (restored on resume)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_acc = -1.0
        self.best_epoch = -1
        self.train_time = 0.0
        self.step_time = 0.0
        self.train_samples = 0
        self.prior_wall = 0.0
        self.meter: ClassificationMeter | None = None

    # -- setup -----------------------------------------------------------------
    def _prepare(self) -> None:
        cfg, ctx = self.config, self.ctx
        if cfg.batch_size % ctx.world_size:
            raise ValueError(
                f"batch_size {cfg.batch_size} (the global batch) must be divisible by the "
                f"number of processes {ctx.world_size}"
            )
        self.local_batch = cfg.batch_size // ctx.world_size
        if self._splits is None:
            check_names(cfg)
            self._splits = build_splits(cfg)
        self.splits = self._splits
        info = self.splits.info
        if len(self.splits.train) == 0 or len(self.splits.val) == 0:
            raise ValueError(f"dataset {cfg.data!r} has an empty train or validation split")
        seed_everything(cfg.seed)
        model = self._model if self._model is not None else build_model(cfg, info)
        sample = self.splits.val[0][0]
        sample = sample if isinstance(sample, torch.Tensor) else torch.as_tensor(sample)
        check_model_fits(model, info, sample)
        self.num_classes = int(info.num_classes)
        self.input_shape = tuple(int(s) for s in sample.shape)
        if ctx.is_main:  # only rank 0 reports it
            self.profile = profile_model(model, self.input_shape)
        else:
            self.profile = {"params": sum(p.numel() for p in model.parameters()), "macs": None}
        if cfg.device == "cpu" or ctx.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.raw_model = model.to(ctx.device)
        self.memory_format = torch.preserve_format
        if cfg.channels_last and len(self.input_shape) in (3, 4):
            self.memory_format = torch.channels_last if len(self.input_shape) == 3 else torch.channels_last_3d
            self.raw_model = self.raw_model.to(memory_format=self.memory_format)

        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(len(self._train_indices(0)) / self.local_batch)
        self._make_scheduler()
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp or "")
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and ctx.device.type == "cuda" else None
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

        if self.resume:
            self._load_state()
        self.train_module: nn.Module = self.raw_model
        self.eval_module: nn.Module = self.raw_model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.train_module = DDP(self.raw_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        if cfg.compile:
            self.train_module = torch.compile(self.train_module)
            if not ctx.distributed:
                self.eval_module = self.train_module

    def _make_scheduler(self) -> None:
        cfg = self.config
        total = cfg.epochs * self.steps_per_epoch
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        spe, step_epochs, schedule = self.steps_per_epoch, cfg.step_epochs, cfg.schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, total_steps=total, warmup_steps=warmup, schedule=schedule,
                                steps_per_epoch=spe, step_epochs=step_epochs),
        )

    def _train_indices(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(self.splits.train, num_replicas=self.ctx.world_size,
                                     rank=self.ctx.rank, shuffle=True, seed=self.config.seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    # -- state -----------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        meter = self.meter or ClassificationMeter(self.num_classes)
        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": ckpt.rng_state(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "partial": {"loss_sum": meter.loss_sum, "count": meter.count, "correct": meter.correct,
                        "correct_top5": meter.correct_top5, "confusion": meter.confusion},
            "history": self.history,
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "train_time": self.train_time,
            "step_time": self.step_time,
            "train_samples": self.train_samples,
            "wall_time": self.prior_wall + (time.perf_counter() - self.t_start),
            "world_size": self.ctx.world_size,
        }

    def _load_state(self) -> None:
        state = ckpt.load_state(self.run_dir / ckpt.STATE_FILE, required=_STATE_KEYS)
        if state.get("world_size", 1) != self.ctx.world_size and state["step_in_epoch"]:
            raise ExciteError(
                f"{self.run_dir} was interrupted mid-epoch with {state['world_size']} process(es); "
                f"resume it with the same number of processes (got {self.ctx.world_size})"
            )
        try:
            self.raw_model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ExciteError(f"state in {self.run_dir} does not fit the model: "
                              f"{str(exc).strip().splitlines()[0]}") from exc
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(dict(state["scheduler"]))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        needed = self.epoch + (1 if self.step_in_epoch else 0)
        if self.config.epochs < needed:
            raise ValueError(
                f"epochs must be at least {needed} to resume {self.run_dir} (it has reached epoch "
                f"{needed}), got {self.config.epochs}"
            )
        self.global_step = int(state["global_step"])
        self.history = list(state.get("history", []))
        self.best_acc = float(state.get("best_acc", -1.0))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.train_time = float(state.get("train_time", 0.0))
        self.step_time = float(state.get("step_time", 0.0))
        self.train_samples = int(state.get("train_samples", 0))
        self.prior_wall = float(state.get("wall_time", 0.0))
        self._resume_rng = state["rng"]
        self._resume_partial = state.get("partial")

    def _save_state(self) -> None:
        if self.ctx.is_main:
            ckpt.save_state(self.run_dir / ckpt.STATE_FILE, self._state())

    # -- loop --------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.ctx.device, non_blocking=True).float()
        if self.memory_format is not torch.preserve_format:
            x = x.contiguous(memory_format=self.memory_format)
        return x, y.to(self.ctx.device, non_blocking=True).long()

    def _loader(self, dataset: Any, indices: Sequence[int]) -> DataLoader:
        return DataLoader(dataset, batch_size=self.local_batch, sampler=_ListSampler(indices),
                          num_workers=self.config.workers, drop_last=False,
                          pin_memory=self.ctx.device.type == "cuda",
                          persistent_workers=False,
                          # its own generator: creating an iterator must not draw from the
                          # global RNG, or a resumed run's dropout masks would shift
                          generator=torch.Generator().manual_seed(self.config.seed))

    def _train_epoch(self, progress: _Progress) -> bool:
        """Run the rest of the current epoch; return False when stopped early."""
        cfg, ctx = self.config, self.ctx
        resumed_mid_epoch = self.step_in_epoch > 0
        if not resumed_mid_epoch:
            seed_everything(epoch_seed(cfg.seed, self.epoch))
        self.meter = ClassificationMeter(self.num_classes)
        if getattr(self, "_resume_partial", None) is not None and resumed_mid_epoch:
            if ctx.is_main:  # the saved sums are totals over all ranks: count them once
                p = self._resume_partial
                self.meter.loss_sum, self.meter.count = float(p["loss_sum"]), int(p["count"])
                self.meter.correct, self.meter.correct_top5 = int(p["correct"]), int(p["correct_top5"])
                self.meter.confusion = p["confusion"].clone()
        if getattr(self, "_resume_rng", None) is not None:
            if resumed_mid_epoch:
                ckpt.set_rng_state(self._resume_rng)
            self._resume_rng = None
        self._resume_partial = None
        indices = self._train_indices(self.epoch)[self.step_in_epoch * self.local_batch:]
        progress.start_epoch(self.epoch, cfg.epochs, self.steps_per_epoch, self.step_in_epoch)
        self.train_module.train()
        t_epoch = time.perf_counter()
        samples_epoch = 0
        for x, y in self._loader(self.splits.train, indices):
            x, y = self._to_device(x, y)
            t_step = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = self.train_module(x)
                loss = self.loss_fn(logits.float(), y)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            self.scheduler.step()
            loss_value = float(loss.detach())
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            now = time.perf_counter()
            self.step_time += now - t_step
            self.meter.update(logits, y, loss_value)
            self.step_in_epoch += 1
            self.global_step += 1
            samples_epoch += int(y.numel()) * ctx.world_size
            self.train_samples += int(y.numel()) * ctx.world_size
            progress.step(loss_value, self.meter.accuracy, samples_epoch / max(now - t_epoch, 1e-9))
            for cb in self.callbacks:
                cb.on_step_end(self)
            if dist_utils.any_true(self.stop_requested, ctx):
                self.train_time += time.perf_counter() - t_epoch
                progress.end_epoch()
                return False
        self.train_time += time.perf_counter() - t_epoch
        self.last_epoch_time = time.perf_counter() - t_epoch
        self.last_epoch_samples = samples_epoch
        progress.end_epoch()
        return True

    def evaluate_val(self) -> ClassificationMeter:
        """Loss, accuracy and confusion on the validation split (shared across ranks)."""
        n = len(self.splits.val)
        indices = list(range(self.ctx.rank, n, self.ctx.world_size))
        meter = ClassificationMeter(self.num_classes)
        self.eval_module.eval()
        with torch.no_grad():
            for x, y in self._loader(self.splits.val, indices):
                x, y = self._to_device(x, y)
                with self._autocast():
                    logits = self.eval_module(x)
                loss = nn.functional.cross_entropy(logits.float(), y)
                meter.update(logits, y, float(loss))
        meter.all_reduce()
        return meter

    def _end_epoch(self) -> dict[str, Any]:
        assert self.meter is not None
        self.meter.all_reduce()
        val = self.evaluate_val()
        row = {
            "epoch": self.epoch + 1,
            "train_loss": self.meter.loss,
            "train_acc": self.meter.accuracy,
            "val_loss": val.loss,
            "val_acc": val.accuracy,
            "val_top5": val.top5,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": self.last_epoch_time,
            "train_samples_per_s": self.last_epoch_samples / max(self.last_epoch_time, 1e-9),
        }
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        self.meter = None
        improved = val.accuracy > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = val.accuracy, row["epoch"]
        if self.ctx.is_main:
            meta = {"epoch": str(row["epoch"]), "val_acc": f"{val.accuracy:.6f}"}
            ckpt.save_weights(self.run_dir / ckpt.LAST_WEIGHTS, self.raw_model, meta)
            if improved:
                ckpt.save_weights(self.run_dir / ckpt.BEST_WEIGHTS, self.raw_model, meta)
            self._save_state()
            reports.write_csv(self.run_dir / "metrics.csv", self.history, METRIC_COLUMNS)
            self._write_summary("running")
        top5 = f" top5 {row['val_top5']:.4f}" if row["val_top5"] is not None else ""
        self.log(
            f"epoch {row['epoch']}/{self.config.epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
            f"{top5}  {row['train_samples_per_s']:.1f} samples/s  {row['epoch_time_s']:.1f}s"
        )
        for cb in self.callbacks:
            cb.on_epoch_end(self, row)
        return row

    def summary(self, status: str) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        macs = self.profile["macs"]
        return {
            "status": status,
            "run_dir": str(self.run_dir),
            "model": self.config.model,
            "attention": self.config.attention,
            "data": self.config.data,
            "seed": self.config.seed,
            "epochs": self.config.epochs,
            "epochs_done": len(self.history),
            "global_step": self.global_step,
            "num_classes": self.num_classes,
            "chance_acc": 1.0 / self.num_classes,
            "train_samples": len(self.splits.train),
            "val_samples": len(self.splits.val),
            "input_shape": list(self.input_shape),
            "best_val_acc": self.best_acc if self.best_acc >= 0 else None,
            "best_epoch": self.best_epoch if self.best_epoch >= 0 else None,
            "final_val_acc": last.get("val_acc"),
            "final_val_top5": last.get("val_top5"),
            "final_val_loss": last.get("val_loss"),
            "final_train_loss": last.get("train_loss"),
            "final_train_acc": last.get("train_acc"),
            "params": self.profile["params"],
            "macs": macs,
            "gmacs": macs / 1e9 if macs is not None else None,
            "wall_time_s": self.prior_wall + (time.perf_counter() - self.t_start),
            "train_time_s": self.train_time,
            "train_samples_per_s": self.train_samples / self.train_time if self.train_time else None,
            "step_time_ms": 1000 * self.step_time / self.global_step if self.global_step else None,
            "peak_memory_mb": self.peak.peak_mb(),
            "memory_kind": self.peak.kind,
            "device": str(self.ctx.device),
            "world_size": self.ctx.world_size,
            "amp": self.config.amp,
            "versions": reports.versions(),
        }

    def _write_summary(self, status: str) -> dict[str, Any]:
        summary = self.summary(status)
        if self.ctx.is_main:
            reports.write_json(self.run_dir / "summary.json", summary)
            if status != "running" and self.history:  # plots cost ~0.5 s: draw them once
                reports.plot_curves(self.run_dir / "curves.png", self.history, title=(
                    f"{self.config.model} + {self.config.attention} on {self.config.data}"))
        return summary

    def run(self) -> dict[str, Any]:
        self.t_start = time.perf_counter()
        self.peak = PeakMemory(self.ctx.device)
        try:
            self._prepare()
            if self.ctx.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                ckpt.atomic_write_text(self.run_dir / "config.yaml", dump_yaml(self.config))
            model_name = self.config.model if self._model is None else type(self._model).__name__
            data_name = getattr(self.splits.info, "name", self.config.data)
            self.log(
                f"training {model_name} + attention {self.config.attention} on "
                f"{data_name} ({len(self.splits.train)} train / {len(self.splits.val)} val, "
                f"{self.num_classes} classes, input {self.input_shape}) for {self.config.epochs} "
                f"epochs on {self.ctx.device} x{self.ctx.world_size}; run dir {self.run_dir}"
            )
            if self.resume:
                self.log(f"resuming at epoch {self.epoch + 1}, step {self.step_in_epoch}")
            progress = _Progress(self.ctx.is_main, self.config.quiet, self.log)
            with _sigint_as_flag(self):
                while self.epoch < self.config.epochs:
                    if not self._train_epoch(progress):
                        raise KeyboardInterrupt
                    self._end_epoch()
            summary = self._write_summary("finished")
            dist_utils.barrier(self.ctx)
            return summary
        except KeyboardInterrupt:
            if hasattr(self, "scheduler"):
                if self.meter is not None and self.ctx.distributed and self.stop_requested:
                    self.meter.all_reduce()  # every rank stopped at the same step
                self._save_state()
                self._write_summary("interrupted")
                self.log(f"interrupted: resumable state saved; continue with "
                         f"`excite train --resume {self.run_dir}`")
            raise
        finally:
            dist_utils.teardown(self.ctx)


@contextlib.contextmanager
def _sigint_as_flag(trainer: Trainer) -> Iterator[None]:
    """First Ctrl-C: finish the current step, save, stop. Second: raise immediately."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        trainer.log("stopping after this step (Ctrl-C again to abort without saving)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def resolve_resume(run_dir: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The saved config of ``run_dir`` with the allowed ``overrides`` applied."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExciteError(f"run directory not found: {run_dir}")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ExciteError(f"{run_dir} is not an excite run directory (no config.yaml)")
    saved = TrainConfig.from_dict(load_yaml(config_path))
    values = saved.to_dict()
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
    if resume and not (path / ckpt.STATE_FILE).is_file():
        ckpt.load_state(path / ckpt.STATE_FILE)  # raises the clear "missing" error
    trainer = Trainer(config, splits=splits, model=model, run_dir=path, resume=resume,
                      callbacks=callbacks, log=log)
    return trainer.run()


__all__ = ["Callback", "Trainer", "fit", "resolve_resume", "lr_factor", "epoch_seed"]
