"""A finished run back as a model: :func:`load_run`.

``excite train`` (and :func:`excite.engine.fit`) write a run directory::

    RUN_DIR/config.yaml        the TrainConfig (model, attention, attention_kwargs, ...)
    RUN_DIR/summary.json       num_classes, input_shape (C, *spatial), ...
    RUN_DIR/best.safetensors   weights of the best validation epoch
    RUN_DIR/last.safetensors   weights of the last finished epoch

:func:`load_run` rebuilds the registered model the config names (with the run's
attention, classes, channels and rank) and loads one of the two weight files into it.
A run trained through the Python API on a model of the user's own (``fit(config,
model=...)``) records that in a ``custom_model`` entry of ``summary.json`` or
``config.yaml``; such a model cannot be rebuilt from a name, and :func:`load_run` says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from excite.engine import TrainConfig
from excite.engine.checkpoint import load_model_weights
from excite.engine.config import load_yaml
from excite.errors import ExciteError
from excite.models import create_model

__all__ = ["CHECKPOINTS", "CUSTOM_MODEL_KEY", "load_run", "run_input_shape", "run_summary"]

#: ``checkpoint=`` name -> weights file in the run directory
CHECKPOINTS = {"best": "best.safetensors", "last": "last.safetensors"}

#: the entry (in summary.json or config.yaml) that marks a run trained on a custom model
CUSTOM_MODEL_KEY = "custom_model"


def _run_dir(run_dir: str | Path) -> Path:
    if not isinstance(run_dir, (str, Path)):
        raise TypeError(f"run_dir must be a path (str or Path), got {run_dir!r}")
    path = Path(run_dir)
    if not path.is_dir():
        raise ExciteError(f"run directory not found: {path}")
    if not (path / "config.yaml").is_file():
        raise ExciteError(
            f"{path} is not an excite run directory (no config.yaml); "
            "run directories are written by `excite train`"
        )
    return path


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``summary.json`` as a dict.

    Raises:
        ExciteError: not a run directory, or no readable summary.json (the run never
            started training).
    """
    path = _run_dir(run_dir) / "summary.json"
    if not path.is_file():
        raise ExciteError(
            f"{path.parent} has no summary.json; the run never started training, so its "
            "classes and input shape are unknown"
        )
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExciteError(f"{path} is not readable JSON ({exc})") from exc
    if not isinstance(summary, dict):
        raise ExciteError(f"{path} must hold a JSON object, got {type(summary).__name__}")
    return summary


def run_input_shape(run_dir: str | Path) -> tuple[int, ...]:
    """The run's sample shape ``(C, *spatial)`` (without the batch), from summary.json.

    Raises:
        ExciteError: see :func:`run_summary`, or a summary without a valid
            ``input_shape``.
    """
    summary = run_summary(run_dir)
    shape = summary.get("input_shape")
    if (
        not isinstance(shape, list)
        or not 2 <= len(shape) <= 4
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise ExciteError(
            f"{Path(run_dir) / 'summary.json'} has no valid input_shape "
            f"(expected [C, *spatial] with 1 to 3 spatial sizes), got {shape!r}"
        )
    return tuple(shape)


def _custom_model(values: dict[str, Any]) -> Any:
    value = values.get(CUSTOM_MODEL_KEY)
    return value if value not in (None, False, "") else None


def load_run(run_dir: str | Path, *, checkpoint: str = "best") -> tuple[nn.Module, TrainConfig]:
    """Rebuild a run's model from its config and load its weights.

    The model is ``create_model(config.model, attention=config.attention_factory(),
    num_classes=..., in_channels=..., spatial_dims=..., **config.model_kwargs)`` with the
    classes and input shape the run trained on (summary.json), exactly as ``excite
    train`` built it, on the CPU and in eval mode.

    Args:
        run_dir: a run directory written by ``excite train`` / ``excite.engine.fit``.
        checkpoint: "best" (``best.safetensors``, the best validation epoch) or "last"
            (``last.safetensors``).

    Returns:
        ``(model, config)``: the model with the weights loaded (eval mode) and the run's
        :class:`~excite.engine.TrainConfig`.

    Raises:
        TypeError: ``run_dir`` is not a path or ``checkpoint`` not a string.
        ValueError: ``checkpoint`` is neither "best" nor "last"; a config whose model,
            attention or options are not valid (any more).
        ExciteError: not a run directory; a run trained on a custom model (recorded as
            ``custom_model``), which cannot be rebuilt from its name; no summary.json; the
            weights file is missing (the run never finished an epoch), corrupt, or does not
            fit the rebuilt model.
    """
    if not isinstance(checkpoint, str):
        raise TypeError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    path = _run_dir(run_dir)
    values = load_yaml(path / "config.yaml")
    summary = run_summary(path)
    custom = _custom_model(summary) or _custom_model(values)
    if custom is not None:
        what = "" if custom is True else f" ({custom})"
        raise ExciteError(
            f"{path} was trained on a custom model{what} passed to excite.engine.fit, which "
            f"cannot be rebuilt from its config; build that model yourself and load "
            f"{path / CHECKPOINTS[checkpoint]} with safetensors.torch.load_file + "
            "model.load_state_dict"
        )
    values.pop(CUSTOM_MODEL_KEY, None)
    values.pop("custom_data", None)  # data given to fit: the model is still rebuilt from its name
    config = TrainConfig.from_dict(values)
    weights = path / CHECKPOINTS[checkpoint]
    if not weights.is_file():
        others = [name for name, f in CHECKPOINTS.items() if (path / f).is_file()]
        hint = f"; available: {', '.join(others)}" if others else "; the run never finished an epoch"
        raise ExciteError(f"no {checkpoint} weights in {path} (expected {weights.name}){hint}")
    shape = run_input_shape(path)
    num_classes = summary.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ExciteError(f"{path / 'summary.json'} has no valid num_classes, got {num_classes!r}")
    kwargs: dict[str, Any] = {
        "num_classes": num_classes,
        "in_channels": shape[0],
        "spatial_dims": config.spatial_dims if config.spatial_dims is not None else len(shape) - 1,
    }
    kwargs.update(config.model_kwargs)  # the engine lets explicit model options win too
    model = create_model(config.model, attention=config.attention_factory(), **kwargs)
    load_model_weights(model, weights)
    return model.eval(), config
