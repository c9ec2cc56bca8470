"""Exceptions shared across excite.

Argument and input problems raise the built-in ``ValueError`` / ``TypeError`` (with the
argument's name, the value received and what is allowed). :class:`ExciteError` is for
problems with things outside the code: a missing data file, a half-written checkpoint,
a missing optional dependency. The CLI prints any of these as one line and exits 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class ExciteError(RuntimeError):
    """A user-facing problem with files, environment or run state."""


class MissingDependencyError(ExciteError, ImportError):
    """An optional dependency is not installed."""


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency or raise with the command that installs it.

    Args:
        module: importable module name, e.g. ``"safetensors.torch"``.
        extra: the excite extra that provides it, e.g. ``"train"``.
        purpose: what needs it, for the message, e.g. ``"saving weights"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        top = module.split(".")[0]
        raise MissingDependencyError(
            f"{purpose} needs the optional package {top!r}, which is not installed; "
            f"install it with: pip install 'excite[{extra}]' -c constraints.txt"
        ) from exc
