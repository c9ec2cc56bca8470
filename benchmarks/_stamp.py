"""When and under what load a benchmark ran: printed with every result."""

from __future__ import annotations

import datetime
import os


def now() -> str:
    """The current UTC time, ``YYYY-MM-DD HH:MM``."""
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"


def load_average() -> str:
    """The 1/5/15-minute load averages, or ``n/a`` where the platform has none."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"
