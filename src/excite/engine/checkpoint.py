"""Checkpoints: atomic writes, safetensors weights, a resumable training state.

Every file is written to a temporary file in the same folder and moved into place with
``os.replace`` (atomic on POSIX), so a reader sees the old file or the new one, never a
half-written one. Loading never unpickles arbitrary objects: weights come from
safetensors; the training state (optimizer, scheduler, scaler, RNG states, counters) is
read with ``torch.load(weights_only=True)``. A missing, truncated or foreign file raises
:class:`~excite.errors.ExciteError` naming the file.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from excite.errors import ExciteError, require

STATE_FILE = "state.pt"
BEST_WEIGHTS = "best.safetensors"
LAST_WEIGHTS = "last.safetensors"
STATE_FORMAT = 1


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically: ``write(fileobj)`` into a temp file, fsync, rename.

    Args:
        path: destination file.
        write: callable that writes the whole content to the binary file object.

    Returns:
        The destination path. On any error the temp file is removed and the previous
        content of ``path`` (if any) is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_weights(path: str | Path, model: nn.Module, metadata: Mapping[str, str] | None = None) -> Path:
    """Save ``model.state_dict()`` as safetensors (tensors made contiguous, on CPU)."""
    st = require("safetensors.torch", extra="train", purpose="saving weights")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = st.save(tensors, metadata=dict(metadata or {}))
    return atomic_write(path, lambda f: f.write(data))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors state dict; ``ExciteError`` if missing or unreadable."""
    st = require("safetensors.torch", extra="train", purpose="loading weights")
    path = Path(path)
    if not path.is_file():
        raise ExciteError(f"weights file not found: {path}")
    try:
        return st.load(path.read_bytes())
    except Exception as exc:  # safetensors raises its own error types
        raise ExciteError(
            f"weights file {path} is truncated or corrupt ({exc}); "
            "it may have been written by an interrupted process"
        ) from exc


def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """Load safetensors weights into ``model`` strictly; mismatches raise ``ExciteError``
    naming the first missing / unexpected keys and shape mismatches on one line."""
    from excite.interop import load_weights_into  # one description of a mismatch

    state = load_weights(path)
    try:
        load_weights_into(model, state)
    except ValueError as exc:
        raise ExciteError(f"weights in {path} do not fit the model: {exc}") from exc


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as weights_only-loadable objects."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_to_tuple(v) for v in value)
    return value


def save_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Save a training-state mapping with ``torch.save``, atomically, tagged with a format."""
    payload = {"format": STATE_FORMAT, **state}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_state(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a training state with ``torch.load(weights_only=True)``.

    Raises:
        ExciteError: the file is missing, truncated, not a training state, or lacks one
            of ``required``.
    """
    path = Path(path)
    if not path.is_file():
        raise ExciteError(
            f"no resumable training state at {path}; the run never finished an epoch "
            "or was not started with `excite train`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise ExciteError(
                f"training state {path} holds objects other than tensors and plain values; "
                "refusing to unpickle it (torch.load weights_only=True)"
            ) from exc
        raise ExciteError(
            f"training state {path} is truncated or corrupt ({type(exc).__name__}); "
            "it was probably written by a process that was killed; start a new run"
        ) from exc
    except Exception as exc:
        raise ExciteError(
            f"training state {path} is truncated or corrupt ({type(exc).__name__}); "
            "it was probably written by a process that was killed; start a new run"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ExciteError(f"{path} is not an excite training state (format {STATE_FORMAT})")
    missing = [key for key in required if key not in state]
    if missing:
        raise ExciteError(f"training state {path} is incomplete: missing {', '.join(missing)}")
    return state
