"""A finished run back as a model: :func:`load_run`.

``excite train`` (and :func:`excite.engine.fit`) write a run directory
(:class:`excite.engine.RunDirectory` knows its files)::

    RUN_DIR/config.yaml        the TrainConfig (model, attention, attention_kwargs, ...)
    RUN_DIR/summary.json       num_classes, input_shape (C, *spatial), ...
    RUN_DIR/best.safetensors   weights of the best validation epoch
    RUN_DIR/last.safetensors   weights of the last finished epoch

:func:`load_run` rebuilds the registered model the config names (with the run's
attention, classes, channels and rank) and loads one of the two weight files into it.
A run trained through the Python API on a model of the user's own (``fit(config,
model=...)``) records it as ``custom_model`` in ``config.yaml`` (or ``summary.json``);
such a model cannot be rebuilt from a name, and :func:`load_run` says so. A run on
custom data (``custom_data``, ``fit(config, splits=...)``) still loads: its model is a
registered one, built for the classes and input shape the summary records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from excite.engine import RunDirectory, TrainConfig
from excite.engine.checkpoint import load_model_weights
from excite.engine.rundir import CUSTOM_KEYS
from excite.errors import ExciteError
from excite.models import create_model

__all__ = ["CHECKPOINTS", "CUSTOM_MODEL_KEY", "custom_parts", "load_run", "run_input_shape", "run_summary"]

#: ``checkpoint=`` values
CHECKPOINTS = ("best", "last")

#: the entry (in config.yaml or summary.json) that marks a run trained on a custom model
CUSTOM_MODEL_KEY = "custom_model"


def _run_dir(run_dir: str | Path) -> RunDirectory:
    if not isinstance(run_dir, (str, Path)):
        raise TypeError(f"run_dir must be a path (str or Path), got {run_dir!r}")
    run = RunDirectory(run_dir)
    if not run.path.is_dir():
        raise ExciteError(f"run directory not found: {run.path}")
    if not run.config_path.is_file():
        raise ExciteError(
            f"{run.path} is not an excite run directory (no config.yaml); "
            "run directories are written by `excite train`"
        )
    return run


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``summary.json`` as a dict.

    Raises:
        ExciteError: not a run directory, or no readable summary.json (the run never
            started training).
    """
    run = _run_dir(run_dir)
    try:
        summary = run.read_summary()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExciteError(f"{run.summary_path} is not readable JSON ({exc})") from exc
    if summary is None:
        raise ExciteError(
            f"{run.path} has no summary.json; the run never started training, so its "
            "classes and input shape are unknown"
        )
    if not isinstance(summary, dict):
        raise ExciteError(f"{run.summary_path} must hold a JSON object, got {type(summary).__name__}")
    return summary


def run_input_shape(run_dir: str | Path) -> tuple[int, ...]:
    """The run's sample shape ``(C, *spatial)`` (without the batch), from summary.json.

    Raises:
        ExciteError: see :func:`run_summary`, or a summary without a valid
            ``input_shape``.
    """
    shape = run_summary(run_dir).get("input_shape")
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


def custom_parts(run_dir: str | Path) -> dict[str, str]:
    """What the run trained that its config does not name: ``{"custom_model": "MyNet",
    "custom_data": "blobs"}`` or a part of it; empty for a run of registered parts.

    Read from ``config.yaml`` (where the engine records them) and ``summary.json``.
    """
    run = _run_dir(run_dir)
    found = dict(run.custom_parts())
    summary = run.read_summary() if run.summary_path.is_file() else None
    for key in CUSTOM_KEYS:
        value = (summary or {}).get(key)
        if key not in found and value not in (None, False, ""):
            found[key] = str(value)
    return found


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
    run = _run_dir(run_dir)
    weights = run.weights_path(checkpoint)
    custom = custom_parts(run.path).get(CUSTOM_MODEL_KEY)
    if custom is not None:
        what = "" if custom == "True" else f" ({custom})"
        raise ExciteError(
            f"{run.path} was trained on a custom model{what} passed to excite.engine.fit, which "
            f"cannot be rebuilt from its config; build that model yourself and load {weights} "
            "with safetensors.torch.load_file + model.load_state_dict"
        )
    values = {k: v for k, v in run.read_config_values().items() if k not in CUSTOM_KEYS}
    config = TrainConfig.from_dict(values)
    summary = run_summary(run.path)
    if not weights.is_file():
        others = [name for name in CHECKPOINTS if run.weights_path(name).is_file()]
        hint = f"; available: {', '.join(others)}" if others else "; the run never finished an epoch"
        raise ExciteError(f"no {checkpoint} weights in {run.path} (expected {weights.name}){hint}")
    shape = run_input_shape(run.path)
    num_classes = summary.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ExciteError(f"{run.summary_path} has no valid num_classes, got {num_classes!r}")
    kwargs: dict[str, Any] = {
        "num_classes": num_classes,
        "in_channels": shape[0],
        "spatial_dims": config.spatial_dims if config.spatial_dims is not None else len(shape) - 1,
    }
    kwargs.update(config.model_kwargs)  # the engine lets explicit model options win too
    model = create_model(config.model, attention=config.attention_factory(), **kwargs)
    load_model_weights(model, weights)
    return model.eval(), config
