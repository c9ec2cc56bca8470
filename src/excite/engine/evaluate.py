"""Evaluate a model or a finished run: accuracy, top-5, per-class accuracy, confusion.

:func:`evaluation_loop` is the one evaluation loop: :func:`evaluate` (``excite eval``)
runs it on one process, and the trainer runs it after every epoch with the validation
split shared across DDP processes. :func:`evaluate_run` rebuilds the run's model from
its ``config.yaml``, loads its safetensors weights and writes ``per_class.csv``,
``confusion.csv`` (rows = true class, columns = predicted), ``confusion.png`` and, last,
``metrics.json`` (with the options of the evaluation) into one folder of the run::

    RUN_DIR/eval-<data>-<checkpoint>/           the run's own data, as trained
    RUN_DIR/eval-<data>-<checkpoint>-<hash>/    other data, data or model options
                                                (hash: 8 hex digits of those options)

An existing evaluation is never overwritten by one with other options: a folder whose
``metrics.json`` records different options (batch size, device, ...) is left alone and
the next free name (``...-2``, ``...-3``) is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
from excite.checks import check_positive_int
from excite.engine.distributed import DistContext, resolve_device
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


def write_eval(out_dir: str | Path, result: EvalResult, extra: dict[str, Any] | None = None, *,
               title: str = "") -> Path:
    """Write per_class.csv, confusion.csv, confusion.png (titled ``title``; skipped
    without matplotlib) and, last, metrics.json (``extra`` first) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports.write_csv(
        out / "per_class.csv",
        [{"class": name, "accuracy": acc, "samples": int(result.confusion[i].sum())}
         for i, (name, acc) in enumerate(zip(result.class_names, result.per_class_accuracy))],
        ("class", "accuracy", "samples"),
    )
    rows = [{"true": name, **{p: int(result.confusion[i, j]) for j, p in enumerate(result.class_names)}}
            for i, name in enumerate(result.class_names)]
    reports.write_csv(out / "confusion.csv", rows, ("true", *result.class_names))
    if reports.plotting_available():
        reports.plot_confusion(out / "confusion.png", result.confusion.numpy(), result.class_names,
                               title=title)
    reports.write_json(out / "metrics.json", {**(extra or {}), **result.to_dict()})
    return out


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` a run was trained with (its ``config.yaml``)."""
    return RunDirectory(run_dir).read_config()


def evaluate_run(run_dir: str | Path, *, data: str | None = None, data_dir: str | None = None,
                 checkpoint: str = "best", batch_size: int | None = None,
                 device: str = "auto", data_options: dict[str, Any] | None = None,
                 model_options: dict[str, Any] | None = None,
                 attention_options: dict[str, Any] | None = None,
                 ) -> tuple[EvalResult, Path]:
    """Evaluate a run's ``best`` or ``last`` weights on its validation split (or ``data``'s).

    Args:
        run_dir: a directory written by :func:`~excite.engine.fit`.
        data: another dataset to evaluate on (the model must fit it).
        data_dir: the dataset's folder, for file-backed datasets.
        checkpoint: ``"best"`` or ``"last"`` weights.
        batch_size: evaluation batch size (default: the run's).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        data_options: dataset options; on the run's own dataset they update its options.
        model_options: ``create_model`` keywords that update the run's (the weights must
            still fit).
        attention_options: attention options that update the run's (e.g. ``impl``).

    Returns:
        The result and the folder the reports were written to (see the module docstring
        for its name; its ``metrics.json`` records every option under ``"options"``).

    Raises:
        ExciteError: not a run directory, missing, corrupt or non-fitting weights.
        ValueError: a bad option, an unknown dataset, a dataset the model does not fit,
            or ``device="cuda"`` without CUDA.
    """
    if batch_size is not None:
        check_positive_int(batch_size, name="batch_size")
    run = RunDirectory(run_dir)
    weights = run.weights_path(checkpoint)
    run_dir = run.path
    config = run.read_config()
    torch_device = resolve_device(device)
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
    if model_options:
        values["model_kwargs"] = {**config.model_kwargs, **model_options}
    if attention_options:
        values["attention_kwargs"] = {**config.attention_kwargs, **attention_options}
    eval_config = TrainConfig.from_dict(values, base=config)
    check_names(eval_config)
    splits = build_splits(eval_config)
    info = splits.info
    # The model is built for the run's own data (its classes/channels/rank)...
    train_info = info if eval_config.data == config.data else _run_info(run, config)
    torch.manual_seed(config.seed)
    model = build_model(eval_config, train_info)
    ckpt.load_model_weights(model, weights)
    # ...and must fit the data it is evaluated on.
    sample = splits.val[0][0]
    check_model_fits(model, info, sample if isinstance(sample, torch.Tensor) else torch.as_tensor(sample))
    batch = config.batch_size if batch_size is None else batch_size
    result = evaluate(model, splits.val, num_classes=int(info.num_classes),
                      class_names=[str(c) for c in info.class_names] if info.class_names else None,
                      batch_size=batch, device=torch_device)
    changes = changed_options(config, eval_config)
    options = {
        "data": eval_config.data, "data_dir": eval_config.data_dir,
        "data_options": eval_config.data_options, "val_subset": eval_config.val_subset,
        "checkpoint": checkpoint, "batch_size": batch, "device": str(torch_device),
        "model_kwargs": eval_config.model_kwargs, "attention_kwargs": eval_config.attention_kwargs,
    }
    out = eval_folder(run_dir, eval_dir_name(eval_config.data, checkpoint, changes), options)
    described = describe_changes(changes)
    title = (f"{run_dir.name}: {checkpoint} weights on {eval_config.data}"
             f"{f' ({described})' if described else ''}\n"
             f"accuracy {result.accuracy:.4f} on {result.num_samples} samples")
    write_eval(out, result, {"run_dir": str(run_dir), "data": eval_config.data, "checkpoint": checkpoint,
                             "options": options}, title=title)
    return result, out


_UNSET = object()  # "the run has no such option"


def changed_options(config: TrainConfig, eval_config: TrainConfig) -> dict[str, Any]:
    """What an evaluation changes from the run it evaluates: the dataset options (all of
    them for another dataset; those that differ on the run's own), the data folder, and
    the model and attention options that differ. Empty: the run's own setup."""
    same_data = eval_config.data == config.data
    base_options = config.data_options if same_data else {}
    changes: dict[str, Any] = {}
    data_changes = {k: v for k, v in eval_config.data_options.items() if base_options.get(k, _UNSET) != v}
    if data_changes:
        changes["data_options"] = data_changes
    if eval_config.data_dir != (config.data_dir if same_data else None):
        changes["data_dir"] = eval_config.data_dir
    for key in ("model_kwargs", "attention_kwargs"):
        mine, theirs = getattr(eval_config, key), getattr(config, key)
        diff = {k: v for k, v in mine.items() if theirs.get(k, _UNSET) != v}
        if diff:
            changes[key] = diff
    return changes


def describe_changes(changes: dict[str, Any]) -> str:
    """``changes`` (see :func:`changed_options`) as ``key=value, ...``."""
    parts = []
    for key, value in changes.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        parts.extend(f"{k}={v}" for k, v in items)
    return ", ".join(parts)


def eval_dir_name(data: str, checkpoint: str, changes: dict[str, Any]) -> str:
    """``eval-DATA-CHECKPOINT``, plus ``-HASH`` (8 hex digits of the sorted JSON of
    ``changes``) when the evaluation changes options of the run."""
    name = f"eval-{data}-{checkpoint}"
    if not changes:
        return name
    text = json.dumps(reports.jsonable(changes), sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def eval_folder(run_dir: Path, name: str, options: dict[str, Any]) -> Path:
    """``run_dir/name``, unless it holds an evaluation with other ``options`` (or other
    files): then the first of ``name-2``, ``name-3``, ... that is free or holds the same
    options. A folder is never reused for different options, so nothing is overwritten."""
    wanted = json.loads(json.dumps(reports.jsonable(options), default=str))
    n = 1
    while True:
        path = run_dir / (name if n == 1 else f"{name}-{n}")
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            return path
        metrics = path / "metrics.json"
        if metrics.is_file():
            try:
                recorded = reports.read_json(metrics).get("options")
            except (OSError, ValueError):
                recorded = None
            if recorded == wanted:
                return path
        n += 1


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
