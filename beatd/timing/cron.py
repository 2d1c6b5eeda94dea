"""Cron expressions: parsed and expanded here, matched here; croniter hashes H.

Plain items (numbers, names, `*`, ranges, steps, lists) are expanded by this
module, so a one-value range means that value however it is spelled
(`Sat-6`, `5-05`, `11-Nov`; croniter widens those to the whole field) and an
out-of-range value is reported with the field's name. A range whose ends are
reversed wraps around the field (`FRI-MON`, `22-2`). The Quartz day items
`W` (nearest weekday) and `LW` (last weekday of the month) are ours too.
Items we do not expand (H, L, `#`) go one at a time through croniter's public
`croniter.expand`, which places each in its field exactly as for the whole
expression (a hash depends on the schedule's name and the field only).

The walk over naive wall time is ours too: the day rule is Vixie's exactly
(day-of-month OR day-of-week when neither field is spelled with a leading
`*`; `*/2` counts as spelled with `*`), time zones stay out (zones.py
applies the DST rule), and it is several times faster than croniter's.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

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
FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
_BOUNDS = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day of month": (1, 31),
    "month": (1, 12),
    "day of week": (0, 7),  # 0 and 7 are both Sunday
}
_NAMES = {
    "month": {
        m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)
    },
    "day of week": {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
}
_PLAIN = re.compile(r"^(?:(\*)|([0-9]+|[a-z]{3})(?:-([0-9]+|[a-z]{3}))?)(?:/([0-9]+))?$", re.I)
_NEAREST = re.compile(r"^(?:([0-9]+)w|w([0-9]+))$", re.I)
_LAST_DOW = re.compile(r"^([0-7]|sun|mon|tue|wed|thu|fri|sat)l$", re.I)
_RANDOM = re.compile(r"^r($|[(/])", re.I)
_BARE_H = re.compile(r"^h(/\d+)?$", re.I)
_CRONITER_ORDER = (5, 0, 1, 2, 3, 4)  # croniter.expand's list index of each of FIELDS
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


@dataclass(slots=True)
class _Field:
    """One field of an expression, expanded."""

    name: str
    any: bool  # exactly `*` (or `?` in a day field): no restriction
    values: set[int] = field(default_factory=set)
    last: bool = False  # day of month `L`
    nearest: set[int] = field(default_factory=set)  # day of month `15W`
    last_weekday: bool = False  # day of month `LW`
    nth: dict[int, set[int | str]] = field(default_factory=dict)  # day of week `5#2`, `5L`


def _field(text: str, index: int, hash_id: bytes) -> _Field:
    """Expand one field as written; ValueError naming the field."""
    name = FIELDS[index]
    day = name in ("day of month", "day of week")
    parsed = _Field(name, any=text == "*" or (day and text == "?"))
    for item in text.split(","):
        if not item:
            raise ValueError(f"{name}: an empty item in {text!r}")
        if _RANDOM.match(item):
            raise ValueError("R (random) is not supported: fire times must be deterministic")
        if item == "?" and day:
            item = "*"
        if name == "day of month":
            if item.lower() == "lw":
                parsed.last_weekday = True
                continue
            if m := _NEAREST.match(item):
                parsed.nearest.add(_in_bounds(int(m.group(1) or m.group(2)), name))
                continue
            if m := _BARE_H.match(item):  # Jenkins keeps a hashed day within 1-28
                item = "h(1-28)" + (m.group(1) or "")
        if name == "day of week" and (m := _LAST_DOW.match(item)):
            item = f"l{_number(m.group(1), name) % 7}"
        plain = _PLAIN.match(item)
        if plain:
            parsed.values.update(_expand_plain(plain, name))
        else:
            _expand_special(item, index, hash_id, parsed)
    if name == "day of week":
        parsed.values = {v % 7 for v in parsed.values}
    return parsed


def _expand_plain(match: re.Match[str], name: str) -> range | list[int]:
    """`*`, `a`, `a-b`, each with an optional `/step`; names and leading zeros allowed."""
    star, first, last, step_text = match.groups()
    low, high = _BOUNDS[name]
    end = 6 if name == "day of week" else high  # where `*` and `a/step` stop
    step = 1 if step_text is None else int(step_text)
    if step < 1:
        raise ValueError(f"{name}: a step must be 1 or more, got {step_text}")
    if star:
        return range(low, end + 1, step)
    a = _number(first, name)
    b = _number(last, name) if last is not None else (end if step_text else a)
    if a == b:  # a one-value range is that value, step or not (croniter widens it)
        return [a]
    if a < b:
        return range(a, b + 1, step)
    if step_text:
        raise ValueError(
            f"{name}: {match.group(0)!r} wraps around and cannot take a step;"
            f" write it as two ranges"
        )
    return [*range(a, high + 1), *range(low, b + 1)]  # wraps: FRI-MON, 22-2


def _number(text: str, name: str) -> int:
    if text.isdigit():
        return _in_bounds(int(text), name)
    names = _NAMES.get(name)
    if names is None or text.lower() not in names:
        kind = {"month": " or a month name", "day of week": " or a day name"}.get(name, "")
        raise ValueError(f"{name}: {text!r} is not a number{kind}")
    return names[text.lower()]


def _in_bounds(value: int, name: str) -> int:
    low, high = _BOUNDS[name]
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is out of range {low}-{high}")
    return value


def _expand_special(item: str, index: int, hash_id: bytes, into: _Field) -> None:
    """H, L and `#` items, through croniter's public expand, one item in its own field."""
    fields = ["*"] * len(FIELDS)
    fields[index] = item
    try:
        expanded, nth = croniter.expand(" ".join(fields), hash_id=hash_id, second_at_beginning=True)
    except (CroniterError, ValueError) as exc:
        raise ValueError(f"{into.name}: {item!r} is not valid{_reason(exc)}") from None
    values = expanded[_CRONITER_ORDER[index]]
    if nth:
        for weekday, which in nth.items():
            into.nth.setdefault(int(weekday), set()).update(which)
        return
    low, high = _BOUNDS[into.name]
    for value in values:
        if value == "l":
            into.last = True
        elif value == "*":
            into.values.update(range(low, high + 1))
        else:
            into.values.add(int(value))


def _reason(exc: Exception) -> str:
    """croniter's explanation without its copy of the expression (reordered, bracketed)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = re.sub(r"\[[^\]]*\]|\bis not acceptable\b", "", text).strip(" .,")
    return f" ({text[:150]})" if text else ""


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
    dom_last_weekday: bool  # LW
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
        dom_any = self.dom is None
        dow_any = self.dow is None
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
        if self.dom_last_weekday:
            days.add(_nearest_weekday(year, month, ndays, ndays))
        for target in self.dom_weekday:
            days.add(_nearest_weekday(year, month, min(target, ndays), ndays))
        return days

    def _dow_days(self, first_dow: int, ndays: int) -> set[int]:
        days: set[int] = set()
        plain = self.dow or frozenset()
        for d in range(1, ndays + 1):
            dow = (first_dow + d - 1) % 7
            nth = self.dow_nth.get(dow)
            if dow in plain or (nth and ((d + 6) // 7 in nth or ("l" in nth and d + 7 > ndays))):
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
    spelled = text.split()
    if len(spelled) not in (5, 6):
        raise ValueError(
            f"cron expression {expr!r} must have 5 fields, or 6 with seconds first"
            f" (found {len(spelled)})"
        )
    if len(spelled) == 5:
        spelled.insert(0, "0")
    try:
        sec, minute, hour, dom, month, dow = (
            _field(text, i, name.encode()) for i, text in enumerate(spelled)
        )
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None
    seconds, minutes = tuple(sorted(sec.values)), tuple(sorted(minute.values))
    hours = tuple(sorted(hour.values))
    return CronSource(
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        months=frozenset(month.values),
        dom=None if dom.any else frozenset(dom.values),
        dom_last=dom.last,
        dom_weekday=tuple(sorted(dom.nearest)),
        dom_last_weekday=dom.last_weekday,
        dow=None if dow.any else frozenset(dow.values),
        dow_nth={k % 7: frozenset(v) for k, v in dow.nth.items()},
        day_or=not spelled[3].startswith(("*", "?")) and not spelled[5].startswith(("*", "?")),
        frequent=len(seconds) * len(minutes) > 1 or len(hours) == 24,
    )
