"""Argument checks shared by every package (layers, models, data, engine, CLI).

Each check returns the value it accepted and raises ``TypeError`` for a value of the
wrong kind or ``ValueError`` for the right kind with a value outside what is allowed;
the message names the argument, shows what was received and says what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "check_bool",
    "check_choice",
    "check_number",
    "check_positive_int",
    "check_positive_ints",
    "is_int",
    "make_divisible",
]


def is_int(value: object) -> bool:
    """True for a Python ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(value: object, *, name: str) -> int:
    """Return ``value`` if it is an int >= 1."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    if value < 1:  # type: ignore[operator]
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value  # type: ignore[return-value]


def check_positive_ints(values: object, *, name: str) -> tuple[int, ...]:
    """Return ``values`` as a tuple if it is a non-empty sequence of ints >= 1."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise TypeError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    return tuple(check_positive_int(v, name=name) for v in values)


def check_number(
    value: object,
    *,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    strict_maximum: bool = False,
) -> float:
    """Return ``value`` if it is a finite real number (not a bool) within the bounds.

    ``strict_minimum`` / ``strict_maximum`` exclude the bound itself.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    low = "" if minimum is None else ("(" if strict_minimum else "[") + f"{minimum:g}"
    high = "" if maximum is None else f"{maximum:g}" + (")" if strict_maximum else "]")
    allowed = f"a finite number in {low or '(-inf'}, {high or 'inf)'}"
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if minimum is not None and (value < minimum or (strict_minimum and value == minimum)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if maximum is not None and (value > maximum or (strict_maximum and value == maximum)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_bool(value: object, *, name: str) -> bool:
    """Return ``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(value: object, choices: Sequence[str], *, name: str) -> str:
    """Return ``value`` if it is one of ``choices``; else list the valid ones."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(choices)}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def make_divisible(value: float, divisor: int, *, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, at least ``min_value``
    (default ``divisor``), going one multiple up when rounding lost more than 10 %.

    This is the channel rounding of MobileNet, timm (``make_divisible``) and X3D's
    ``round_width``: e.g. 432 / 16 = 27 -> 24 would lose 11 %, so 32.
    """
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
