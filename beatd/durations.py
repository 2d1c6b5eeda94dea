"""Durations as users write them: "90s", "5m", "1h30m", "2d", or seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([wdhms])")
_WHOLE = re.compile(r"(?:\d+[wdhms])+")


def parse_duration(value: object) -> timedelta:
    """Parse a duration; raises ValueError with a message fit for a user.

    Whole seconds only: the finest resolution of any schedule is one second.
    """
    if isinstance(value, bool):
        raise ValueError(f'expected a duration such as "90s" or "1h30m", got {value!r}')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif _WHOLE.fullmatch(text):
            seconds = float(sum(int(n) * _UNITS[u] for n, u in _PART.findall(text)))
        else:
            raise ValueError(f'expected a duration such as "90s" or "1h30m", got {value!r}')
    else:
        raise ValueError(f'expected a duration such as "90s" or "1h30m", got {value!r}')
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite duration: {value!r}")
    if seconds != int(seconds):
        raise ValueError(f"durations are whole seconds, got {value!r}")
    if abs(seconds) > 100 * 365 * 86400:
        raise ValueError(f"duration too long (over 100 years): {value!r}")
    return timedelta(seconds=int(seconds))


def format_duration(delta: timedelta) -> str:
    """The shortest "1h30m" form; the inverse of parse_duration."""
    total = int(delta.total_seconds())
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            parts.append(f"{n}{unit}")
    return sign + "".join(parts)
