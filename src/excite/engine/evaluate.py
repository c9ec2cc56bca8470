"""Evaluate a model or a finished run: accuracy, top-5, per-class accuracy, confusion.

:func:`evaluate_run` rebuilds the run's model from its ``config.yaml``, loads its
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
from torch.utils.data import DataLoader, Dataset

from excite.engine import checkpoint as ckpt
from excite.engine import reports
from excite.engine.builders import build_model, build_splits, check_model_fits, check_names
from excite.engine.config import TrainConfig, load_yaml
from excite.engine.metrics import ClassificationMeter
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


def evaluate(model: nn.Module, dataset: Dataset, *, num_classes: int,
             class_names: list[str] | None = None, batch_size: int = 64,
             device: str | torch.device = "cpu", workers: int = 0) -> EvalResult:
    """Run ``model`` (eval mode, no grad) over ``dataset`` of (x, y) items.

    Args:
        model: classifier returning logits of shape (N, num_classes).
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
    model = model.to(device).eval()
    meter = ClassificationMeter(num_classes)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device).float(), y.to(device).long()
            logits = model(x)
            meter.update(logits, y, float(nn.functional.cross_entropy(logits.float(), y)))
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
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExciteError(f"run directory not found: {run_dir}")
    if not (run_dir / "config.yaml").is_file():
        raise ExciteError(f"{run_dir} is not an excite run directory (no config.yaml)")
    return TrainConfig.from_dict(load_yaml(run_dir / "config.yaml"))


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
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    weights = run_dir / (ckpt.BEST_WEIGHTS if checkpoint == "best" else ckpt.LAST_WEIGHTS)
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
    train_info = info if eval_config.data == config.data else _run_info(run_dir, config)
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


def _run_info(run_dir: Path, config: TrainConfig) -> _Info:
    """Classes/channels/rank the run was trained with (from its summary.json)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        raise ExciteError(f"{run_dir} has no summary.json; cannot rebuild its model for other data")
    summary = reports.read_json(path)
    shape = summary["input_shape"]
    return _Info(config.data, int(summary["num_classes"]), int(shape[0]), len(shape) - 1)
