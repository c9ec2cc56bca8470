"""The ``excite`` command line.

Every module in this package that defines ``add_parser(subparsers)`` contributes one
subcommand; ``add_parser`` registers its arguments and sets ``func`` (a callable taking
the parsed namespace and returning an exit code) with ``parser.set_defaults(func=...)``.
Subcommand modules stay thin: parse, call the library, print.

Errors a user can act on (bad arguments, missing files, missing extras) print one line
on stderr, without a traceback, and exit with status 2 (set ``EXCITE_DEBUG=1`` to see
the traceback instead).
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

# OpenMP threads that spin while they wait make CPU training many times slower when the
# cores are shared with other processes (measured in docs/training.md); let waiting threads
# sleep unless the user chose a policy. Must happen before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from excite import __version__  # noqa: E402
from excite.errors import ExciteError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="excite",
        description="Attention for 1D/2D/3D CNNs: train, evaluate, compare, profile.",
    )
    parser.add_argument("--version", action="version", version=f"excite {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
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


def main(argv: Sequence[str] | None = None) -> int:
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
        print(f"excite {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"excite {args.command}: interrupted", file=sys.stderr)
        return 130
