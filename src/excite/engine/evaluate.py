"""Evaluate a model or a finished run: accuracy, top-5, per-class accuracy, confusion.

:func:`evaluation_loop` is the one evaluation loop: :func:`evaluate` (``excite eval``)
runs it on one process, and the trainer runs it after every epoch with the validation
split shared across DDP processes. :func:`evaluate_run` rebuilds the run's model from its ``config.yaml``, loads its
safetensors weights and writes, in ``RUN_DIR/eval-<data>/``: ``metrics.json``,
``per_class.csv``, ``confusion.csv`` (rows = true class, columns = predicted) and
``confusion.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from excite.engine import checkpoint as ckpt
from excite.engine import reports
from excite.engine.batches import autocast, make_loader, to_device
from excite.engine.builders import build_model, build_splits, check_model_fits, check_names
from excite.engine.config import TrainConfig
from excite.engine.distributed import DistContext
from excite.engine.metrics import ClassificationMeter
from excite.engine.rundir import RunDirectory
from excite.errors import ExciteError


@dataclasses.dataclass
class EvalResult:
    """Metrics of one evaluation (``top5`` is None with fewer than 5 classes)."""

    loss: float
    accuracy: float
    top5: float | None
    per_class_accuracy: list[float]
    confusion: torch.Tensor
    num_samples: int
    class_names: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "top5": self.top5,
            "num_samples": self.num_samples,
            "per_class_accuracy": dict(zip(self.class_names, self.per_class_accuracy)),
        }


def evaluation_loop(model: nn.Module, dataset: Dataset, *, num_classes: int, batch_size: int,
                    device: torch.device, workers: int = 0, amp: torch.dtype | None = None,
                    memory_format: torch.memory_format = torch.preserve_format,
                    dist: DistContext | None = None, seed: int = 0) -> ClassificationMeter:
    """Loss, accuracy and confusion sums of ``model`` (eval mode, no grad) over ``dataset``.

    The one evaluation loop: :func:`evaluate` (``excite eval``) and the validation after
    every training epoch both run it. The loss is the plain cross-entropy
    ``-log softmax(z)_y`` (no label smoothing), averaged over samples.

    Args:
        model: classifier returning logits z of shape (N, K), already on ``device``.
        dataset: map-style dataset of (x, y); x of shape (C, *spatial), y an int label.
        num_classes: K.
        batch_size: batch size of each process.
        device: where ``model`` is.
        workers: DataLoader workers.
        amp: autocast dtype (``None``: full precision).
        memory_format: memory format of the input batches.
        dist: the processes to split the work over: rank r evaluates samples r, r + N, ...
            and the sums are all-reduced, so every rank gets the totals. ``None``: this
            process evaluates everything.
        seed: seed of the loader's own generator (worker seeds), so evaluating never draws
            from the global RNG.

    Returns:
        A :class:`ClassificationMeter` holding the totals over ``dataset``.
    """
    rank, world_size = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    indices = range(rank, len(dataset), world_size)  # type: ignore[arg-type]
    loader = make_loader(dataset, indices, batch_size=batch_size, workers=workers, device=device,
                         seed=seed)
    meter = ClassificationMeter(num_classes)
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            x, y = to_device(x, y, device, memory_format)
            with autocast(device, amp):
                logits = model(x)
            meter.update(logits, y, float(nn.functional.cross_entropy(logits.float(), y)))
    if dist is not None and dist.distributed:
        meter.all_reduce()
    return meter


def evaluate(model: nn.Module, dataset: Dataset, *, num_classes: int,
             class_names: list[str] | None = None, batch_size: int = 64,
             device: str | torch.device = "cpu", workers: int = 0) -> EvalResult:
    """Run ``model`` (eval mode, no grad) over ``dataset`` of (x, y) items.

    Args:
        model: classifier returning logits of shape (N, num_classes); moved to ``device``.
        dataset: map-style dataset; x of shape (C, *spatial), y an int label.
        num_classes: K.
        class_names: names for reports (default ``"0" .. "K-1"``).
        batch_size: evaluation batch size.
        device: where to run.
        workers: DataLoader workers.

    Returns:
        An :class:`EvalResult`.
    """
    device = torch.device(device)
    meter = evaluation_loop(model.to(device), dataset, num_classes=num_classes,
                            batch_size=batch_size, device=device, workers=workers)
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    return EvalResult(meter.loss, meter.accuracy, meter.top5, meter.per_class_accuracy(),
                      meter.confusion, meter.count, names)


def write_eval(out_dir: str | Path, result: EvalResult, extra: dict[str, Any] | None = None) -> Path:
    """Write metrics.json, per_class.csv, confusion.csv and confusion.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports.write_json(out / "metrics.json", {**(extra or {}), **result.to_dict()})
    reports.write_csv(
        out / "per_class.csv",
        [{"class": name, "accuracy": acc, "samples": int(result.confusion[i].sum())}
         for i, (name, acc) in enumerate(zip(result.class_names, result.per_class_accuracy))],
        ("class", "accuracy", "samples"),
    )
    rows = [{"true": name, **{p: int(result.confusion[i, j]) for j, p in enumerate(result.class_names)}}
            for i, name in enumerate(result.class_names)]
    reports.write_csv(out / "confusion.csv", rows, ("true", *result.class_names))
    reports.plot_confusion(out / "confusion.png", result.confusion.numpy(), result.class_names)
    return out


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` a run was trained with (its ``config.yaml``)."""
    return RunDirectory(run_dir).read_config()


def evaluate_run(run_dir: str | Path, *, data: str | None = None, data_dir: str | None = None,
                 checkpoint: str = "best", batch_size: int | None = None,
                 device: str = "cpu", data_options: dict[str, Any] | None = None,
                 ) -> tuple[EvalResult, Path]:
    """Evaluate a run's ``best`` or ``last`` weights on its validation split (or ``data``'s).

    Returns:
        The result and the folder the reports were written to.

    Raises:
        ExciteError: not a run directory, missing or corrupt weights.
        ValueError: unknown dataset, or a dataset the model does not fit.
    """
    run = RunDirectory(run_dir)
    weights = run.weights_path(checkpoint)
    run_dir = run.path
    config = run.read_config()
    if not weights.is_file():
        raise ExciteError(f"no {checkpoint} weights in {run_dir} (expected {weights.name}); "
                          "the run has not finished an epoch")
    values: dict[str, Any] = {}
    if data is not None and data != config.data:
        values.update(data=data, data_options=dict(data_options or {}), train_subset=None,
                      val_subset=None)
    elif data_options:
        values["data_options"] = {**config.data_options, **data_options}
    if data_dir is not None:
        values["data_dir"] = data_dir
    eval_config = TrainConfig.from_dict(values, base=config)
    check_names(eval_config)
    splits = build_splits(eval_config)
    info = splits.info
    # The model is built for the run's own data (its classes/channels/rank)...
    train_info = info if eval_config.data == config.data else _run_info(run, config)
    torch.manual_seed(config.seed)
    model = build_model(config, train_info)
    ckpt.load_model_weights(model, weights)
    # ...and must fit the data it is evaluated on.
    sample = splits.val[0][0]
    check_model_fits(model, info, sample if isinstance(sample, torch.Tensor) else torch.as_tensor(sample))
    result = evaluate(model, splits.val, num_classes=int(info.num_classes),
                      class_names=[str(c) for c in info.class_names] if info.class_names else None,
                      batch_size=batch_size or config.batch_size, device=device)
    out = write_eval(run_dir / f"eval-{eval_config.data}", result,
                     {"run_dir": str(run_dir), "data": eval_config.data, "checkpoint": checkpoint})
    return result, out


@dataclasses.dataclass
class _Info:
    name: str
    num_classes: int
    in_channels: int
    spatial_dims: int


def _run_info(run: RunDirectory, config: TrainConfig) -> _Info:
    """Classes/channels/rank the run was trained with (from its summary.json)."""
    summary = run.read_summary()
    if summary is None:
        raise ExciteError(f"{run.path} has no summary.json; cannot rebuild its model for other data")
    shape = summary["input_shape"]
    return _Info(config.data, int(summary["num_classes"]), int(shape[0]), len(shape) - 1)
