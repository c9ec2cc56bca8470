"""Checkpoints: atomic writes, safetensors weights, a resumable training state.

Every file is written to a temporary file in the same folder (``.NAME.XXXXXXXX.tmp``,
created with the permissions ``open()`` gives: 0o666 minus the umask) and moved into
place with ``os.replace`` (atomic on POSIX), so a reader sees the old file or the new
one, never a half-written one. ``exclusive=True`` moves it into place only when no file
of that name exists (a hard link, which fails on an existing name): the way a new run
claims its ``config.yaml``. A full disk raises :class:`DiskFullError` naming the file
and the bytes it needs. Loading never unpickles arbitrary objects: weights come from
safetensors; the training state (optimizer, scheduler, scaler, RNG states, counters) is
read with ``torch.load(weights_only=True)``. A missing, truncated or foreign file raises
:class:`~excite.errors.ExciteError` naming the file.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import random
import re
import secrets
import shutil
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

#: what the temporary files of :func:`atomic_write` are called (``tempfile.mkstemp``'s
#: 8-character names of earlier versions included)
TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS,
             getattr(errno, "ENOTSUP", errno.ENOSYS), getattr(errno, "EOPNOTSUPP", errno.ENOSYS)}


class DiskFullError(ExciteError):
    """No space left (or quota exceeded) while writing a file.

    Attributes:
        path: the file being written.
        needed: bytes the write needed (at least that many, when the size was not known
            in advance).
        free: bytes free on that file system when the write failed.
    """

    def __init__(self, path: Path, needed: int, free: int | None, *, exact: bool) -> None:
        self.path, self.needed, self.free = path, needed, free
        space = f", {free:,} bytes free" if free is not None else ""
        super().__init__(f"no space left on device: writing {path} needs "
                         f"{'' if exact else 'at least '}{needed:,} bytes{space}")


def create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file next to ``path``: ``(file descriptor, its path)``.

    The file is created with mode 0o666 minus the process's umask, as ``open()`` would
    create ``path`` itself (``tempfile.mkstemp`` gives 0o600, which colleagues and
    servers reading a shared run directory cannot read).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")


class _CountingWriter:
    """A binary file object that counts the bytes given to ``write``."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.attempted = 0

    def write(self, data: Any) -> int:
        self.attempted += len(memoryview(data).cast("B"))
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _place_exclusively(tmp: Path, path: Path) -> None:
    """Give ``tmp``'s content the name ``path`` unless ``path`` exists (FileExistsError)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # a file system without hard links: exclusive creation, then the content
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(tmp.read_bytes())
            handle.flush()
            os.fsync(handle.fileno())
    tmp.unlink()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None] | bytes, *,
                 exclusive: bool = False) -> Path:
    """Write ``path`` atomically: into a temp file, fsync, rename.

    Args:
        path: destination file.
        write: the whole content as bytes, or a callable that writes it to the binary
            file object it is given.
        exclusive: fail with ``FileExistsError`` (and write nothing) when ``path`` exists.

    Returns:
        The destination path. On any error the temp file is removed and the previous
        content of ``path`` (if any) is left untouched.

    Raises:
        DiskFullError: the file system is full (or over quota).
        FileExistsError: ``exclusive`` and ``path`` exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path)
    counter = None
    try:
        with os.fdopen(fd, "wb") as handle:
            counter = _CountingWriter(handle)
            if isinstance(write, (bytes, bytearray, memoryview)):
                counter.write(write)
            else:
                write(counter)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            _place_exclusively(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            needed = len(write) if isinstance(write, (bytes, bytearray)) else (counter.attempted if counter else 0)
            raise DiskFullError(path, needed, _free_bytes(path.parent),
                                exact=isinstance(write, (bytes, bytearray))) from None
        raise
    return path


def remove_stray_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_write` calls left in
    ``folder`` (only names of the form ``.NAME.XXXXXXXX.tmp``); return what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if TEMP_NAME.match(entry.name) and entry.is_file() and not entry.is_symlink():
            try:
                entry.unlink()
            except FileNotFoundError:
                continue
            removed.append(entry)
    return sorted(removed)


def atomic_write_text(path: str | Path, text: str, *, exclusive: bool = False) -> Path:
    return atomic_write(path, text.encode("utf-8"), exclusive=exclusive)


def save_weights(path: str | Path, model: nn.Module, metadata: Mapping[str, str] | None = None) -> Path:
    """Save ``model.state_dict()`` as safetensors (tensors made contiguous, on CPU)."""
    st = require("safetensors.torch", extra="train", purpose="saving weights")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, st.save(tensors, metadata=dict(metadata or {})))


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
    buffer = io.BytesIO()  # serialized first, so a full disk reports the exact size
    torch.save({"format": STATE_FORMAT, **state}, buffer)
    return atomic_write(path, buffer.getvalue())


def load_state(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a training state with ``torch.load(weights_only=True)``.

    Raises:
        ExciteError: the file is missing, truncated, not a training state, or lacks one
            of ``required``.
    """
    path = Path(path)
    if not path.is_file():
        raise ExciteError(
            f"no resumable training state at {path}; the run never saved one (at the end of "
            "an epoch, or every --save-every steps) or was not started with `excite train`"
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
