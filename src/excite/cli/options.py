"""The command line's shared option vocabulary: ``KEY=VALUE`` flags and their help.

Every subcommand that builds a model spells its keyword options the same way:

    --model-option KEY=VALUE       extra create_model keyword (repeatable)
    --attention-option KEY=VALUE   attention module option, e.g. variant=official
    --data-option KEY=VALUE        dataset option, e.g. train_size=256

VALUE is parsed as YAML, so ``8`` is an int, ``0.5`` and ``1e-3`` are floats,
``true``/``false`` (and, in PyYAML's YAML 1.1, ``yes``/``no``/``on``/``off``) are
booleans, ``[3, 7, 7]`` is a list and anything else is a string (quote a string that
would parse otherwise: ``name='[x]'``). A value that is not valid
YAML is a one-line error naming the flag and the position. Dashes in KEY become
underscores (``stride-in-1x1`` is ``stride_in_1x1``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from excite.errors import describe_yaml_error

# YAML 1.1 (PyYAML) reads 1e-3 as a string: its floats need a dot. Users mean a number.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")


def parse_value(text: str) -> Any:
    """Parse one VALUE as YAML (numbers, booleans, lists, mappings, strings).

    Args:
        text: the text after the first ``=``.

    Returns:
        The YAML value; an empty text gives ``None``; ``1e-3`` gives a float.

    Raises:
        ValueError: ``text`` is not valid YAML (the message gives the line, column and
            problem on one line).
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"the value is not valid YAML at {describe_yaml_error(exc)}") from None
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(text.strip()):
        return float(text)
    return value


def parse_key_value(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` → ``(key, value)``: KEY with dashes as underscores, VALUE as YAML.

    Raises:
        ValueError: no ``=``, an empty KEY, or a VALUE that is not valid YAML.
    """
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, parse_value(value)
    except ValueError as exc:
        hint = "" if "'" in value or '"' in value else f"; to pass a string, quote it: {key}=\"'{value}'\""
        raise ValueError(f"{text}: {exc}{hint}") from None


def key_value(text: str) -> tuple[str, Any]:
    """:func:`parse_key_value` as an argparse ``type=`` (errors name the flag)."""
    try:
        return parse_key_value(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def option_dict(pairs: Iterable[tuple[str, Any]] | None) -> dict[str, Any]:
    """The ``(key, value)`` pairs of a repeated flag as a dict (a later key wins)."""
    return dict(pairs or ())


class _DeprecatedAlias(argparse.Action):
    """Appends like its new flag's ``action="append"`` after a one-line warning."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(values)
        setattr(namespace, self.dest, items)


def add_option_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    help: str,
    *,
    deprecated: Sequence[str] = (),
) -> None:
    """Add a repeatable ``flag KEY=VALUE`` (parsed by :func:`key_value`).

    The parsed namespace holds a list of ``(key, value)`` pairs, or None when the flag is
    not given (turn it into a dict with :func:`option_dict`).

    Args:
        parser: the subcommand's parser.
        flag: e.g. ``"--model-option"``.
        help: the help text; "repeatable" and, unless it names one, "(default: none)"
            are appended.
        deprecated: old spellings kept working: hidden from ``--help``, they print a
            one-line deprecation warning and append to the same list.
    """
    text = f"{help}; repeatable" + ("" if "default" in help else " (default: none)")
    action = parser.add_argument(flag, action="append", type=key_value, metavar="KEY=VALUE", help=text)
    for old in deprecated:
        parser.add_argument(old, action=_DeprecatedAlias, new=flag, dest=action.dest, type=key_value,
                            metavar="KEY=VALUE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
