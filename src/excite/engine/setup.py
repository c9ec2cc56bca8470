"""Everything a run fixes before its first step, built once by :func:`prepare_run`.

Order matters for reproducibility: the global RNGs are seeded with ``config.seed`` just
before the model is built (so its initial weights depend on the seed alone), a new run's
``init_from`` weights are loaded into it right after, the profiler runs on a copy with the
RNG state restored, and a resumed state is loaded into the model, optimizer, scheduler
and GradScaler before the model is wrapped for DDP / compile.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from excite.engine.batches import AMP_DTYPES, memory_format_for, training_samples
from excite.engine.builders import Splits, build_model, build_splits, check_model_fits, check_names, profile_model
from excite.engine.config import TrainConfig
from excite.engine.distributed import DistContext
from excite.engine.schedule import epoch_indices, make_optimizer, make_scheduler, seed_everything
from excite.engine.state import SavedState
from excite.errors import ExciteError


@dataclasses.dataclass
class RunSetup:
    """The fixed parts of one run.

    Attributes:
        splits: train and validation data.
        num_classes: K.
        input_shape: shape of one sample, (C, *spatial).
        profile: ``{"params": int, "macs": int | None}`` per sample (MACs on rank 0 only).
        model: the model being trained (what is saved; not a DDP / compiled wrapper).
        train_module: what the training step calls (``model``, DDP-wrapped and/or compiled).
        eval_module: what validation calls (``model``, compiled when not distributed).
        optimizer: SGD or AdamW over the trainable parameters.
        scheduler: per-step learning-rate schedule.
        scaler: GradScaler for fp16 autocast on CUDA, else ``None``.
        amp_dtype: autocast dtype or ``None``.
        memory_format: memory format of the input batches.
        loss_fn: training loss (cross-entropy with the configured label smoothing).
        local_batch: batch size of this process (global batch / number of processes).
        steps_per_epoch: optimizer steps per epoch on this process.
        epoch_samples: samples per epoch this process trains on: its share of the
            epoch's order, less a last batch of one (see
            :func:`~excite.engine.batches.training_samples`).
        dropped: samples per epoch and process left out that way (0 or 1).
        init_report: what ``config.init_from`` loaded (an
            :class:`excite.interop.WeightsReport`; ``None`` without it, or on resume).
    """

    splits: Splits
    num_classes: int
    input_shape: tuple[int, ...]
    profile: dict[str, Any]
    model: nn.Module
    train_module: nn.Module
    eval_module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    loss_fn: nn.Module
    local_batch: int
    steps_per_epoch: int
    epoch_samples: int
    dropped: int
    init_report: Any = None


def load_data(config: TrainConfig, splits: Splits | None) -> Splits:
    """``splits`` or the configured dataset; refuses an empty split."""
    if splits is None:
        check_names(config)
        splits = build_splits(config)
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise ValueError(f"dataset {config.data!r} has an empty train or validation split")
    return splits


def init_weights(model: nn.Module, config: TrainConfig) -> Any:
    """Load ``config.init_from`` into ``model`` (all or nothing; keys matching
    ``config.init_exclude`` keep their initial values).

    Returns:
        The :class:`excite.interop.WeightsReport` (keys loaded, keys left alone).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file's keys or shapes do not fit the model (one line naming them).
        ExciteError: the file is corrupt or holds objects other than tensors.
    """
    from excite.interop import load_weights_into  # a side tool: imported only when asked

    path = config.init_from
    try:
        return load_weights_into(model, path, exclude=tuple(config.init_exclude))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"init_from: weights file not found: {path}") from exc
    except ValueError as exc:
        raise ValueError(f"init_from {path}: {exc}") from exc
    except ExciteError as exc:
        raise ExciteError(f"init_from: {exc}") from exc


def prepare_run(config: TrainConfig, ctx: DistContext, *, splits: Splits | None = None,
                model: nn.Module | None = None, saved: SavedState | None = None) -> RunSetup:
    """Data, model, optimizer and schedule of a run (and its resumed state, if any).

    Args:
        config: the run's settings.
        ctx: this process's place in the process group.
        splits: data to use instead of ``config.data``.
        model: a model to use instead of ``config.model``.
        saved: a state to resume from.

    Raises:
        ValueError: a global batch that does not split evenly over the processes, unknown
            names, an empty split, or a model that does not fit the data.
        ExciteError: a saved state that does not fit the model; an ``init_from`` file
            that is corrupt.
        FileNotFoundError: a missing ``init_from`` file.
    """
    if config.batch_size % ctx.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} (the global batch) must be divisible by the "
            f"number of processes {ctx.world_size}"
        )
    local_batch = config.batch_size // ctx.world_size
    splits = load_data(config, splits)
    info = splits.info
    seed_everything(config.seed)
    model = model if model is not None else build_model(config, info)
    init_report = init_weights(model, config) if config.init_from is not None and saved is None else None
    sample = splits.val[0][0]
    sample = sample if isinstance(sample, torch.Tensor) else torch.as_tensor(sample)
    check_model_fits(model, info, sample)
    input_shape = tuple(int(s) for s in sample.shape)
    if ctx.is_main:  # only rank 0 reports it
        profile = profile_model(model, input_shape)
    else:
        profile = {"params": sum(p.numel() for p in model.parameters()), "macs": None}
    if config.device == "cpu" or ctx.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    memory_format = memory_format_for(input_shape, config.channels_last)
    model = model.to(ctx.device)
    if memory_format is not torch.preserve_format:
        model = model.to(memory_format=memory_format)

    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    share = len(epoch_indices(splits.train, seed=config.seed, epoch=0, rank=ctx.rank,
                              world_size=ctx.world_size))
    epoch_samples = training_samples(share, local_batch)
    steps_per_epoch = math.ceil(epoch_samples / local_batch)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    use_scaler = config.amp == "fp16" and ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    if saved is not None:
        saved.load_into(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)

    train_module, eval_module = wrap_model(model, ctx, compile=config.compile)
    return RunSetup(
        splits=splits, num_classes=int(info.num_classes), input_shape=input_shape, profile=profile,
        model=model, train_module=train_module, eval_module=eval_module, optimizer=optimizer,
        scheduler=scheduler, scaler=scaler, amp_dtype=AMP_DTYPES.get(config.amp or ""),
        memory_format=memory_format,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        local_batch=local_batch, steps_per_epoch=steps_per_epoch, epoch_samples=epoch_samples,
        dropped=share - epoch_samples, init_report=init_report,
    )


def wrap_model(model: nn.Module, ctx: DistContext, *, compile: bool) -> tuple[nn.Module, nn.Module]:
    """(training module, evaluation module): DDP when distributed, ``torch.compile`` when
    asked; evaluation skips DDP (each rank evaluates its own share) and then also the
    compiled wrapper (it wraps the DDP module)."""
    train_module: nn.Module = model
    eval_module: nn.Module = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        train_module = DistributedDataParallel(model, device_ids=device_ids)
    if compile:
        train_module = torch.compile(train_module)
        if not ctx.distributed:
            eval_module = train_module
    return train_module, eval_module
