"""RFC 5545 RRULE bodies, iterated by dateutil on naive local wall time.

DTSTART is the schedule's start in local wall time, else 1970-01-01 00:00, so
unset BYHOUR/BYMINUTE/BYSECOND default to 0 (dateutil fills unset BY* parts
from DTSTART). The body must not carry DTSTART (use `start`) nor UNTIL (use
`end`): both would fight the schedule's own bounds, and a UNTIL in UTC cannot
be combined with a naive local DTSTART. COUNT is refused too (use `max_fires`):
it counts from DTSTART, so it pins every evaluation to a walk from there.

dateutil's `after()` iterates from DTSTART, which for FREQ=MINUTELY since 1970
is millions of steps. `RRuleSource.next_wall` therefore re-anchors DTSTART
forward by a whole number of periods (INTERVAL times the FREQ unit) just before the
wanted time. That yields the same occurrences because each period's set
depends only on the period and the BY* parts, and the defaulted BY* parts are
taken from the original DTSTART and passed explicitly.

dateutil also loops until year 9999 when a rule yields nothing, one period
at a time (for FREQ=SECONDLY;BYSETPOS=2 that is forever), so `check_rrule`
refuses such rules up front: a BYSETPOS larger than any period's set, and day
filters that match no day (tested on a YEARLY skeleton, a few thousand steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from dateutil.relativedelta import relativedelta
from dateutil.rrule import (
    DAILY,
    HOURLY,
    MINUTELY,
    MONTHLY,
    SECONDLY,
    WEEKLY,
    YEARLY,
    rrule,
    rrulestr,
)

DEFAULT_DTSTART = datetime(1970, 1, 1)
_UNIT = {
    SECONDLY: timedelta(seconds=1),
    MINUTELY: timedelta(minutes=1),
    HOURLY: timedelta(hours=1),
    DAILY: timedelta(days=1),
    WEEKLY: timedelta(weeks=1),
}
_BUCKET = 64  # re-anchor to a multiple of 64 periods: few rules built, short walks


@lru_cache(maxsize=1024)
def parse_rrule(rule: str, dtstart: datetime = DEFAULT_DTSTART) -> rrule:
    """Parse a body (no DTSTART, no UNTIL); ValueError with a user message."""
    text = " ".join(rule.split())
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    upper = text.upper()
    if not upper:
        raise ValueError("empty rrule")
    if "DTSTART" in upper or "\n" in rule:
        raise ValueError("an rrule must not contain DTSTART: set the schedule's start instead")
    parts = {p.split("=", 1)[0].strip() for p in upper.split(";") if p.strip()}
    if "UNTIL" in parts:
        raise ValueError("an rrule must not contain UNTIL: set the schedule's end instead")
    if "FREQ" not in parts:
        raise ValueError(f"rrule {rule!r} has no FREQ")
    if "COUNT" in parts:
        raise ValueError("an rrule must not contain COUNT: set the schedule's max_fires instead")
    try:
        parsed = rrulestr(text, dtstart=dtstart)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"invalid rrule {rule!r}: {exc}") from None
    if not isinstance(parsed, rrule):
        raise ValueError(f"invalid rrule {rule!r}: expected one RRULE")
    # dateutil accepts these out of range, then fails mid-iteration (ZeroDivisionError, TypeError)
    if _get(parsed, "_interval") < 1:
        raise ValueError(f"invalid rrule {rule!r}: INTERVAL must be 1 or more")
    for attribute, part, high in _TIME_PARTS:
        bad = sorted(v for v in (_get(parsed, attribute) or ()) if not 0 <= v <= high)
        if bad:
            raise ValueError(
                f"invalid rrule {rule!r}: {part} must be from 0 to {high}, got {bad[0]}"
            )
    return parsed


_TIME_PARTS = (
    ("_byhour", "BYHOUR", 23),
    ("_byminute", "BYMINUTE", 59),
    ("_bysecond", "BYSECOND", 59),
)


def check_rrule(rule: str) -> None:
    """ValueError unless the rule parses and can fire (with the default DTSTART)."""
    base = parse_rrule(rule)
    freq: int = _get(base, "_freq")
    setpos = _get(base, "_bysetpos")
    if setpos:
        largest = _largest_period(base)
        if min(abs(p) for p in setpos) > largest:
            raise ValueError(
                f"rrule {rule!r} never fires: BYSETPOS selects beyond the {largest}"
                " occurrence(s) a period can hold"
            )
    nth_days = _get(base, "_bynweekday")
    if freq != YEARLY and not (nth_days and freq == MONTHLY):
        # the same day filters, one evaluation per year instead of per day or second
        skeleton = rrule(
            YEARLY,
            dtstart=DEFAULT_DTSTART,
            bymonth=_get(base, "_bymonth"),
            bymonthday=(_get(base, "_bymonthday") + _get(base, "_bynmonthday")) or None,
            byyearday=_get(base, "_byyearday"),
            byweekno=_get(base, "_byweekno"),
            byweekday=_get(base, "_byweekday"),
            byeaster=_get(base, "_byeaster"),
            byhour=0,
            byminute=0,
            bysecond=0,
        )
        if _after(skeleton, DEFAULT_DTSTART) is None:
            raise ValueError(f"rrule {rule!r} never fires: no day matches its BY* parts")
    if RRuleSource(rule, DEFAULT_DTSTART).next_wall(DEFAULT_DTSTART) is None:
        raise ValueError(f"rrule {rule!r} never fires")


def _largest_period(base: rrule) -> int:
    """The most occurrences one period of the rule can produce (before BYSETPOS)."""
    freq: int = _get(base, "_freq")
    days = {YEARLY: 366, MONTHLY: 31, WEEKLY: 7}.get(freq, 1)
    expanding = {  # time parts that expand a period rather than filter it
        YEARLY: ("_byhour", "_byminute", "_bysecond"),
        MONTHLY: ("_byhour", "_byminute", "_bysecond"),
        WEEKLY: ("_byhour", "_byminute", "_bysecond"),
        DAILY: ("_byhour", "_byminute", "_bysecond"),
        HOURLY: ("_byminute", "_bysecond"),
        MINUTELY: ("_bysecond",),
        SECONDLY: (),
    }[freq]
    count = days
    for part in expanding:
        count *= len(_get(base, part) or (0,))
    return count


@dataclass(frozen=True, slots=True)
class RRuleSource:
    """A rule with its DTSTART (naive local wall time)."""

    rule: str
    dtstart: datetime

    @property
    def frequent(self) -> bool:
        return _get(parse_rrule(self.rule, self.dtstart), "_freq") in (HOURLY, MINUTELY, SECONDLY)

    def next_wall(self, lo: datetime) -> datetime | None:
        base = parse_rrule(self.rule, self.dtstart)
        grain, periods = _periods_before(base, lo)
        bucket = grain * max(1, _BUCKET // grain)
        anchored = periods // bucket * bucket - bucket
        if anchored <= 0:
            return _after(base, lo)
        return _after(_anchored(self.rule, self.dtstart, anchored), lo)


def _get(rule: rrule, attribute: str) -> Any:
    """dateutil keeps the expanded rule in private attributes; read them in one place."""
    return getattr(rule, attribute)


def _after(rule: rrule, lo: datetime) -> datetime | None:
    try:
        found: datetime | None = rule.after(lo, inc=True)
    except (ValueError, OverflowError):  # past year 9999
        return None
    return found


def _periods_before(base: rrule, lo: datetime) -> tuple[int, int]:
    """(grain, whole periods from DTSTART to lo); re-anchoring moves by multiples of grain.

    MONTHLY/YEARLY move by whole years only, so DTSTART's day and month stay
    valid; periods is 0 when the rule must not be re-anchored.
    """
    start: datetime = _get(base, "_dtstart")
    interval: int = _get(base, "_interval")
    freq: int = _get(base, "_freq")
    if _get(base, "_count") is not None or lo <= start:
        return 1, 0
    if freq in _UNIT:
        return 1, (lo - start) // (_UNIT[freq] * interval)
    if (start.month, start.day) == (2, 29):
        return 1, 0
    unit = 1 if freq == MONTHLY else 12
    months = (lo.year - start.year) * 12 + lo.month - start.month - 1
    step = math.lcm(interval * unit, 12)  # months per re-anchoring step
    grain = step // (interval * unit)
    return grain, max(0, months // step) * grain


_DEFAULTED = ("bymonth", "bymonthday", "byweekday", "byhour", "byminute", "bysecond")


@lru_cache(maxsize=512)
def _anchored(rule: str, dtstart: datetime, periods: int) -> rrule:
    """The same rule with DTSTART moved forward by whole periods.

    The BY* parts dateutil defaulted from the old DTSTART are passed
    explicitly, so the new DTSTART does not change them.
    """
    base = parse_rrule(rule, dtstart)
    freq: int = _get(base, "_freq")
    interval: int = _get(base, "_interval")
    if freq in _UNIT:
        new_start = dtstart + _UNIT[freq] * interval * periods
    else:
        unit = 1 if freq == MONTHLY else 12
        new_start = dtstart + relativedelta(months=unit * interval * periods)
    given = _get(base, "_original_rule")
    fixed: dict[str, Any] = {}
    for key in _DEFAULTED:
        if key in given:
            continue
        if key == "bymonthday":
            value: Any = tuple(_get(base, "_bymonthday")) + tuple(_get(base, "_bynmonthday"))
        else:
            value = _get(base, "_" + key)
        if value:
            fixed[key] = value
    return base.replace(dtstart=new_start, **fixed)
