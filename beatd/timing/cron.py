"""Cron expressions: croniter parses and expands them, we match them.

croniter turns the text (names, ranges, steps, lists, L, W, #, H) into value
sets; this module walks naive wall time over those sets. Doing the walk here
rather than through croniter's own iterator lets the day rule be Vixie's
exactly (day-of-month OR day-of-week when neither field is spelled with a
leading `*`; `*/2` counts as spelled with `*`), keeps time zones out of it
(zones.py applies the DST rule) and is several times faster.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from croniter import CroniterError, croniter

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DOW_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_LAST_DOW = re.compile(r"^([0-7]|sun|mon|tue|wed|thu|fri|sat)l$")
_RANDOM = re.compile(r"^r($|[(/])")
_BARE_H = re.compile(r"^h(/\d+)?$")
_EQUAL_RANGE = re.compile(r"^(\w+)-\1(/\d+)?$")
SEARCH_YEARS = 400  # the Gregorian calendar repeats every 400 years: none within, none ever


def normalize_cron(expr: str) -> str:
    """Expand macros, collapse blanks; ValueError with a user message if invalid."""
    text = " ".join(expr.split())
    text = MACROS.get(text.lower(), text)
    fields = text.split(" ")
    if text.startswith("@"):
        raise ValueError(f"unknown cron macro {expr.strip()!r} (use one of {', '.join(MACROS)})")
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron expression {expr.strip()!r} must have 5 fields, or 6 with seconds first"
            f" (found {len(fields)})"
        )
    compile_cron(text, "")
    return text


def _croniter_text(expr: str) -> str:
    """Our spelling -> croniter's: seconds-first kept, `5L` -> `L5`, bare H in dom -> 1-28."""
    fields = expr.lower().split()
    dom, dow = len(fields) - 3, len(fields) - 1
    if any(_RANDOM.match(p) for f in fields for p in f.split(",")):
        raise ValueError("R (random) is not supported: fire times must be deterministic")
    parts = []
    for item in fields[dow].split(","):
        m = _LAST_DOW.match(item)
        parts.append(f"l{int(_DOW_NAMES.get(m.group(1), m.group(1))) % 7}" if m else item)
    fields[dow] = ",".join(parts)
    # croniter widens "a-a" to the whole field; cron means just a
    fields = [",".join(_EQUAL_RANGE.sub(r"\1", p) for p in f.split(",")) for f in fields]
    # Jenkins keeps a hashed day of month within 1-28 so it fires every month.
    fields[dom] = ",".join(
        "h(1-28)" + (m.group(1) or "") if (m := _BARE_H.match(p)) else p
        for p in fields[dom].split(",")
    )
    return " ".join(fields)


def _ints(values: list[Any], low: int, high: int) -> tuple[int, ...]:
    if values == ["*"]:
        return tuple(range(low, high + 1))
    return tuple(sorted({int(v) for v in values if v != "*" and v != "l"}))


@dataclass(eq=False, slots=True)
class CronSource:
    """A compiled cron expression; `next_wall` walks naive local wall time."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    dom: frozenset[int] | None  # None: any day (field is `*`)
    dom_last: bool
    dom_weekday: tuple[int, ...]  # W: nearest weekday to these days
    dow: frozenset[int] | None  # cron numbering, Sunday = 0
    dow_nth: dict[int, frozenset[int | str]]  # weekday -> {1..5, "l"}
    day_or: bool
    frequent: bool
    _days: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)

    def next_wall(self, lo: datetime) -> datetime | None:
        year, month, day = lo.year, lo.month, lo.day
        tod = lo.hour * 3600 + lo.minute * 60 + lo.second
        last_year = min(year + SEARCH_YEARS, 9998)
        while year <= last_year:
            if month in self.months:
                days = self.days_in(year, month)
                i = bisect_left(days, day)
                while i < len(days):
                    d = days[i]
                    t = self._time_at_or_after(tod if d == day else 0)
                    if t is not None:
                        h, rest = divmod(t, 3600)
                        return datetime(year, month, d, h, *divmod(rest, 60))
                    i += 1
            month += 1
            if month > 12:
                month, year = 1, year + 1
            day, tod = 1, 0
        return None

    def _time_at_or_after(self, tod: int) -> int | None:
        """Seconds since midnight of the first matching time of day >= tod."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        if not tod:
            return hours[0] * 3600 + minutes[0] * 60 + seconds[0]
        h, rest = divmod(tod, 3600)
        m, s = divmod(rest, 60)
        i = bisect_left(hours, h)
        if i < len(hours) and hours[i] == h:
            j = bisect_left(minutes, m)
            if j < len(minutes) and minutes[j] == m:
                k = bisect_left(seconds, s)
                if k < len(seconds):
                    return h * 3600 + m * 60 + seconds[k]
                j += 1
            if j < len(minutes):
                return h * 3600 + minutes[j] * 60 + seconds[0]
            i += 1
        if i < len(hours):
            return hours[i] * 3600 + minutes[0] * 60 + seconds[0]
        return None

    def days_in(self, year: int, month: int) -> tuple[int, ...]:
        """The matching days of one month, cached."""
        key = (year, month)
        days = self._days.get(key)
        if days is None:
            if len(self._days) > 4096:
                self._days.clear()
            days = self._days[key] = self._compute_days(year, month)
        return days

    def _compute_days(self, year: int, month: int) -> tuple[int, ...]:
        first_weekday, ndays = calendar.monthrange(year, month)
        first_dow = (first_weekday + 1) % 7  # cron numbering
        dom_any = self.dom is None and not self.dom_last and not self.dom_weekday
        dow_any = self.dow is None and not self.dow_nth
        if dom_any and dow_any:
            return tuple(range(1, ndays + 1))
        dom_days = set() if dom_any else self._dom_days(year, month, ndays)
        dow_days = set() if dow_any else self._dow_days(first_dow, ndays)
        if dom_any:
            chosen = dow_days
        elif dow_any:
            chosen = dom_days
        elif self.day_or:
            chosen = dom_days | dow_days
        else:
            chosen = dom_days & dow_days
        return tuple(sorted(chosen))

    def _dom_days(self, year: int, month: int, ndays: int) -> set[int]:
        days = {d for d in self.dom or () if d <= ndays}
        if self.dom_last:
            days.add(ndays)
        for target in self.dom_weekday:
            days.add(_nearest_weekday(year, month, min(target, ndays), ndays))
        return days

    def _dow_days(self, first_dow: int, ndays: int) -> set[int]:
        days: set[int] = set()
        for d in range(1, ndays + 1):
            dow = (first_dow + d - 1) % 7
            if self.dow_nth:
                nth = self.dow_nth.get(dow)
                if nth and ((d + 6) // 7 in nth or ("l" in nth and d + 7 > ndays)):
                    days.add(d)
            elif self.dow is None or dow in self.dow:
                days.add(d)
        return days


def _nearest_weekday(year: int, month: int, day: int, ndays: int) -> int:
    """Quartz W: the weekday nearest `day`, never leaving the month."""
    weekday = calendar.weekday(year, month, day)
    if weekday == 5:
        return day - 1 if day > 1 else day + 2
    if weekday == 6:
        return day + 1 if day < ndays else day - 2
    return day


def compile_cron(expr: str, name: str) -> CronSource:
    """Parse and expand one expression for one schedule (H hashes on `name`).

    Only H depends on the name: every schedule spelling the same expression
    without H shares one compiled source, so 10,000 `* * * * *` schedules
    compile once instead of thrashing a per-name cache.
    """
    return _compile(expr, name if "h" in expr.lower() else "")


@lru_cache(maxsize=4096)
def _compile(expr: str, name: str) -> CronSource:
    text = MACROS.get(" ".join(expr.split()).lower(), expr)
    spelled = text.lower().split()
    if len(spelled) not in (5, 6):
        raise ValueError(
            f"cron expression {expr!r} must have 5 fields, or 6 with seconds first"
            f" (found {len(spelled)})"
        )
    try:
        expanded, nth, _, nearest = croniter._expand(
            _croniter_text(text), hash_id=name.encode(), second_at_beginning=True
        )
    except CroniterError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {_reason(exc)}") from None
    seconds = _ints(expanded[5], 0, 59) if len(expanded) == 6 else (0,)
    minutes, hours = _ints(expanded[0], 0, 59), _ints(expanded[1], 0, 23)
    dom_field, dow_field = spelled[-3], spelled[-1]
    dom_star = dom_field.startswith(("*", "?"))
    dow_star = dow_field.startswith(("*", "?"))
    weekday_days = tuple(sorted(nearest))
    dom_values = [v for v in expanded[2] if v not in ("l", "*")]
    return CronSource(
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        months=frozenset(_ints(expanded[3], 1, 12)),
        dom=None
        if expanded[2] == ["*"]
        else frozenset(int(v) for v in dom_values if int(v) not in nearest),
        dom_last="l" in expanded[2],
        dom_weekday=weekday_days,
        dow=None if expanded[4] == ["*"] else frozenset(int(v) % 7 for v in expanded[4]),
        dow_nth={int(k) % 7: frozenset(v) for k, v in nth.items()},
        day_or=not dom_star and not dow_star,
        frequent=len(seconds) * len(minutes) > 1 or len(hours) == 24,
    )


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.replace("[", "").replace("]", "")[:200]
