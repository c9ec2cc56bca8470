"""The ``excite`` command line.

Every module in this package that defines ``add_parser(subparsers)`` contributes one
subcommand; ``add_parser`` registers its arguments and sets ``func`` (a callable taking
the parsed namespace and returning an exit code) with ``parser.set_defaults(func=...)``.
Subcommand modules stay thin: parse, call the library, print.

Every parser is a :class:`Parser`: flags are never abbreviated (``--epoch`` is not
``--epochs``), help shows each flag's default, and a usage error is one line. Errors a
user can act on (bad arguments, missing files, missing extras) print one line on stderr,
without a traceback, and exit with status 2 (set ``EXCITE_DEBUG=1`` to see the traceback
instead). Output piped into a command that stops reading (``excite profile ... | head``)
ends quietly, as other Unix tools do.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

# OpenMP threads that spin while they wait make CPU training many times slower when the
# cores are shared with other processes (measured in docs/training.md); let waiting threads
# sleep unless the user chose a policy. Must happen before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from excite import __version__  # noqa: E402
from excite.errors import ExciteError  # noqa: E402


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the help already names its
    default or there is none to show (None, False, an empty list: "not given")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))
        ):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"  # help is %-formatted


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` for every excite command: no abbreviated flags, defaults in
    help (:class:`DefaultsHelpFormatter` unless a command picks a formatter) and usage
    errors on one line (``excite train: error: ... (see `excite train --help`)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="excite",
        description="Attention for 1D/2D/3D CNNs: train, evaluate, compare, profile.",
    )
    parser.add_argument("--version", action="version", version=f"excite {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        add_parser = getattr(module, "add_parser", None)
        if add_parser is not None:
            add_parser(subparsers)
    return parser


@contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Print warnings (e.g. a skipped data file) as ``excite CMD: warning: ...`` lines."""

    def show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        print(f"excite {command}: warning: {message}", file=file or sys.stderr)

    with warnings.catch_warnings():  # restores the previous handler on exit
        warnings.showwarning = show_warning
        yield


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (a multi-line message is joined with spaces)."""
    return " ".join(str(exc).split())


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``excite ARGV``; returns the exit status (argparse exits itself on bad usage)."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:  # the reader (head, less) stopped reading: not an error
        _silence_stdout()
        return 128 + 13  # as if killed by SIGPIPE, like other Unix tools


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        with _one_line_warnings(args.command):
            return int(func(args) or 0)
    except (ExciteError, ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        if os.environ.get("EXCITE_DEBUG"):
            raise
        print(f"excite {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"excite {args.command}: interrupted", file=sys.stderr)
        return 130
