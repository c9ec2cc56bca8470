"""Typed dataset options: one kind per option parses CLI strings and validates values.

Every dataset declares its options as :class:`Option` entries (default, kind, help).
A kind turns either a Python value (from code or a YAML config) or a string (from
``--data-option key=value``) into the validated value, and raises ``TypeError`` /
``ValueError`` naming the option, the value received and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_NONE_WORDS = {"none", "null", ""}
_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off"}


def _split_list(text: str) -> list[str]:
    """Split ``"64x64"``, ``"64,64"`` or ``"(64, 64)"`` into its items."""
    text = text.strip().strip("()[]")
    return [part.strip() for part in re.split(r"[,x×]", text) if part.strip()]


class Kind:
    """Base class: ``kind(name, value)`` returns the validated value or raises."""

    def __call__(self, name: str, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class Int(Kind):
    """An integer, optionally bounded below/above (inclusive)."""

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high

    def __call__(self, name: str, value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"option {name!r} must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"option {name!r} must be an int, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"option {name!r} must be in {self.describe()}, got {value}")
        return int(value)

    def describe(self) -> str:
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"int [{low}, {high}]"


class Float(Kind):
    """A finite float, optionally bounded (inclusive)."""

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        self.low, self.high = low, high

    def __call__(self, name: str, value: Any) -> float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"option {name!r} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"option {name!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"option {name!r} must be finite, got {value}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"option {name!r} must be in {self.describe()}, got {value}")
        return value

    def describe(self) -> str:
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"float [{low}, {high}]"


class Bool(Kind):
    """``True``/``False``; strings ``true/false/yes/no/on/off/1/0``."""

    def __call__(self, name: str, value: Any) -> bool:
        if isinstance(value, str):
            word = value.strip().lower()
            if word in _TRUE_WORDS:
                return True
            if word in _FALSE_WORDS:
                return False
            raise ValueError(f"option {name!r} must be true or false, got {value!r}")
        if not isinstance(value, bool):
            raise TypeError(f"option {name!r} must be a bool, got {value!r}")
        return value

    def describe(self) -> str:
        return "bool"


class Choice(Kind):
    """One string out of a fixed set."""

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)

    def __call__(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"option {name!r} must be one of {list(self.choices)}, got {value!r}")
        value = value.strip()
        if value not in self.choices:
            raise ValueError(f"option {name!r} must be one of {list(self.choices)}, got {value!r}")
        return value

    def describe(self) -> str:
        return " | ".join(self.choices)


class Text(Kind):
    """Any non-empty string."""

    def __call__(self, name: str, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # e.g. an npz key "0" that a YAML parser turned into 0
        if not isinstance(value, str) or not value.strip():
            raise TypeError(f"option {name!r} must be a non-empty string, got {value!r}")
        return value.strip()

    def describe(self) -> str:
        return "text"


class Size(Kind):
    """``n`` positive ints: an int (repeated), a sequence, or ``"64x64"`` / ``"64,64"``."""

    def __init__(self, n: int, low: int = 1) -> None:
        self.n, self.low = n, low

    def __call__(self, name: str, value: Any) -> tuple[int, ...]:
        if isinstance(value, str):
            parts = _split_list(value)
            try:
                value = [int(p) for p in parts]
            except ValueError:
                raise ValueError(
                    f"option {name!r} must be {self.describe()}, got {value!r}"
                ) from None
            if len(value) == 1:
                value = value[0]
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,) * self.n
        if not isinstance(value, (tuple, list)) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise TypeError(f"option {name!r} must be {self.describe()}, got {value!r}")
        if len(value) != self.n:
            raise ValueError(f"option {name!r} needs {self.n} sizes, got {len(value)}: {value!r}")
        if any(v < self.low for v in value):
            raise ValueError(f"option {name!r} sizes must be >= {self.low}, got {tuple(value)}")
        return tuple(int(v) for v in value)

    def describe(self) -> str:
        return f"int or {self.n} ints (e.g. {'x'.join(['64'] * self.n)})"


class Range(Kind):
    """A ``(low, high)`` float interval with ``low <= high``; a single number means both."""

    def __init__(self, low: float = 0.0) -> None:
        self.low = low

    def __call__(self, name: str, value: Any) -> tuple[float, float]:
        if isinstance(value, str):
            parts = _split_list(value.replace(":", ","))
            try:
                value = [float(p) for p in parts]
            except ValueError:
                raise ValueError(f"option {name!r} must be {self.describe()}, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value, value)
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"option {name!r} must be {self.describe()}, got {value!r}")
        low, high = (Float(self.low)(name, v) for v in value)
        if low > high:
            raise ValueError(f"option {name!r} must have low <= high, got ({low}, {high})")
        return (low, high)

    def describe(self) -> str:
        return f"number or low,high (>= {self.low})"


class Names(Kind):
    """A subset of named choices: an int ``k`` (the first k) or names, in order given."""

    def __init__(self, choices: Sequence[str], low: int = 2) -> None:
        self.choices = tuple(choices)
        self.low = low

    def __call__(self, name: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                value = int(text)
            else:
                value = [part.strip() for part in text.strip("()[]").split(",") if part.strip()]
        if isinstance(value, int) and not isinstance(value, bool):
            if not self.low <= value <= len(self.choices):
                raise ValueError(
                    f"option {name!r} must be between {self.low} and {len(self.choices)}, got {value}"
                )
            return self.choices[:value]
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"option {name!r} must be {self.describe()}, got {value!r}")
        unknown = [v for v in value if v not in self.choices]
        if unknown:
            raise ValueError(
                f"option {name!r} has unknown names {unknown}; allowed: {list(self.choices)}"
            )
        if len(set(value)) != len(value):
            raise ValueError(f"option {name!r} repeats names: {list(value)}")
        if len(value) < self.low:
            raise ValueError(f"option {name!r} needs at least {self.low} names, got {list(value)}")
        return tuple(value)

    def describe(self) -> str:
        return f"int (first k of {', '.join(self.choices)}) or comma-separated names"


class Optional(Kind):
    """``None`` (or the strings ``none``/``null``) or a value of the inner kind."""

    def __init__(self, inner: Kind) -> None:
        self.inner = inner

    def __call__(self, name: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        return self.inner(name, value)

    def describe(self) -> str:
        return f"{self.inner.describe()} or none"


@dataclass(frozen=True)
class Option:
    """One dataset option.

    Attributes:
        default: the value used when the option is not given.
        kind: parses and validates given values.
        help: one line for ``excite datasets NAME`` and docs/data.md.
    """

    default: Any
    kind: Kind
    help: str
