"""Exceptions shared across excite, and the one-line messages users see.

Argument and input problems raise the built-in ``ValueError`` / ``TypeError`` (with the
argument's name, the value received and what is allowed). :class:`ExciteError` is for
problems with things outside the code: a missing data file, a half-written checkpoint,
a missing optional dependency. The CLI prints any of these as one line and exits 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: pip distribution names of optional modules whose import name differs.
PIP_PACKAGES: dict[str, str] = {
    "yaml": "PyYAML",
    "PIL": "pillow",
}


class ExciteError(RuntimeError):
    """A user-facing problem with files, environment or run state."""


class MissingDependencyError(ExciteError, ImportError):
    """An optional dependency is not installed."""


def install_hint(module: str, *, extra: str | None = None) -> str:
    """The pip command that installs ``module``, e.g. ``pip install PyYAML``.

    Args:
        module: importable module name, e.g. ``"yaml"`` or ``"safetensors.torch"``; its
            top-level name is mapped to the pip package (:data:`PIP_PACKAGES`).
        extra: the excite extra that also provides it, offered as the alternative
            ``pip install 'excite[EXTRA]'``.

    Returns:
        One line without a constraints file, so it works outside this repository.
    """
    top = module.split(".")[0]
    hint = f"pip install {PIP_PACKAGES.get(top, top)}"
    if extra:
        hint += f" (or pip install 'excite[{extra}]')"
    return hint


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency or raise with the command that installs it.

    Args:
        module: importable module name, e.g. ``"safetensors.torch"``.
        extra: the excite extra that provides it, e.g. ``"train"``.
        purpose: what needs it, for the message, e.g. ``"saving weights"``.

    Raises:
        MissingDependencyError: the module cannot be imported; the message names the
            pip package and the extra (see :func:`install_hint`).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingDependencyError(
            f"{purpose} needs the package {PIP_PACKAGES.get(top, top)!r} (module {top!r}), "
            f"which is not installed; install it with: {install_hint(module, extra=extra)}"
        ) from exc


def describe_yaml_error(exc: Exception) -> str:
    """One line for a PyYAML error: ``line L, column C: problem (context)``.

    PyYAML's own message spans several lines (the context, the problem, each with a
    quoted excerpt and a caret); this keeps the position (1-based) and the two phrases.

    Args:
        exc: an exception raised by ``yaml.safe_load``; errors without a position
            (anything not a ``yaml.MarkedYAMLError``) give their message on one line.
    """
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context:
        where = ""
        if context_mark is not None and (context_mark.line, context_mark.column) != (mark.line, mark.column):
            where = f" started at line {context_mark.line + 1}, column {context_mark.column + 1}"
        text += f" ({context}{where})"
    return " ".join(text.split())
