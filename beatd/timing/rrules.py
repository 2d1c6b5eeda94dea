"""RFC 5545 RRULE bodies, iterated by dateutil on naive local wall time.

DTSTART is the schedule's start in local wall time, else 1970-01-01 00:00, so
unset BYHOUR/BYMINUTE/BYSECOND default to 0 (unset BY* parts come from
DTSTART). The body must not carry DTSTART (use `start`).

`RuleText` is the rule as written, split by this module (parts, FREQ,
INTERVAL, COUNT, UNTIL): everything beatd needs to know about a rule comes
from it, and dateutil is used only through its public API (`rrulestr`,
`rrule`, `replace`, `after`, iteration).

- COUNT counts occurrences from DTSTART in local wall time, so a COUNT rule
  is the same rule without COUNT, ended at its COUNT-th wall occurrence
  (found once, by iterating; hence COUNT is at most `MAX_COUNT`). A wall time
  that DST skips still uses one up (zones.py maps walls to instants later).
- UNTIL is inclusive: a naive one (or a date: its whole day) bounds wall
  time; one with `Z` is a UTC instant, applied by the caller to instants
  (`RuleText.until_utc`). dateutil sees neither.

dateutil's `after()` iterates from DTSTART, which for FREQ=MINUTELY since 1970
is millions of steps. `RRuleSource.next_wall` therefore re-anchors DTSTART
forward by a whole number of periods (INTERVAL times the FREQ unit) just before the
wanted time. That yields the same occurrences because each period's set
depends only on the period and the BY* parts, and the BY* parts defaulted
from the original DTSTART are passed explicitly.

dateutil also loops until year 9999 when a rule yields nothing, one period
at a time (for FREQ=SECONDLY;BYSETPOS=2 that is forever), so `check_rrule`
refuses such rules up front: a BYSETPOS larger than any period's set, and day
filters that match no day (tested on a YEARLY skeleton, a few thousand steps).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import islice
from typing import Any

from dateutil.relativedelta import relativedelta
from dateutil.rrule import (
    DAILY,
    FR,
    HOURLY,
    MINUTELY,
    MO,
    MONTHLY,
    SA,
    SECONDLY,
    SU,
    TH,
    TU,
    WE,
    WEEKLY,
    YEARLY,
    rrule,
    rrulestr,
    weekday,
)

DEFAULT_DTSTART = datetime(1970, 1, 1)
MAX_COUNT = 10_000
NO_DTSTART = "an rrule must not contain DTSTART: set the schedule's start instead"
_FREQS = {"YEARLY": YEARLY, "MONTHLY": MONTHLY, "WEEKLY": WEEKLY, "DAILY": DAILY}
_FREQS |= {"HOURLY": HOURLY, "MINUTELY": MINUTELY, "SECONDLY": SECONDLY}
_WEEKDAYS = {"MO": MO, "TU": TU, "WE": WE, "TH": TH, "FR": FR, "SA": SA, "SU": SU}
_BYDAY = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_UNTIL = re.compile(r"^(\d{8})(?:T(\d{6})(Z?))?$")
_UNIT = {
    SECONDLY: timedelta(seconds=1),
    MINUTELY: timedelta(minutes=1),
    HOURLY: timedelta(hours=1),
    DAILY: timedelta(days=1),
    WEEKLY: timedelta(weeks=1),
}
_DAY_KEYS = frozenset({"bymonth", "bymonthday", "byweekday"})
_TIME_PARTS = (("BYHOUR", 23), ("BYMINUTE", 59), ("BYSECOND", 59))
_BUCKET = 64  # re-anchor to a multiple of 64 periods: few rules built, short walks


@dataclass(frozen=True, slots=True)
class RuleText:
    """One rule as written: its parts (upper case), COUNT and UNTIL taken apart."""

    parts: dict[str, str]  # every part but COUNT and UNTIL, e.g. {"FREQ": "DAILY"}
    freq: int
    interval: int
    count: int | None
    until: datetime | None  # naive: local wall time, or UTC when until_utc
    until_utc: bool

    @property
    def body(self) -> str:
        """The rule dateutil sees: no COUNT, no UNTIL."""
        return ";".join(f"{k}={v}" for k, v in self.parts.items())

    @property
    def bounded(self) -> bool:
        return self.count is not None or self.until is not None

    def ints(self, key: str) -> tuple[int, ...]:
        value = self.parts.get(key)
        return tuple(int(v) for v in value.split(",")) if value else ()

    def weekdays(self) -> tuple[weekday, ...]:
        found = []
        for item in filter(None, self.parts.get("BYDAY", "").split(",")):
            m = _BYDAY.match(item)
            if m is None:
                raise ValueError(f"BYDAY item {item!r} is not a weekday like MO, 2TU or -1FR")
            found.append(
                _WEEKDAYS[m.group(2)](int(m.group(1))) if m.group(1) else _WEEKDAYS[m.group(2)]
            )
        return tuple(found)


@lru_cache(maxsize=1024)
def rule_text(rule: str) -> RuleText:
    """Split a body; ValueError with a user message (dateutil checks the rest)."""
    text = " ".join(rule.split())
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    upper = text.upper()
    if not upper:
        raise ValueError("empty rrule")
    if "DTSTART" in upper or "\n" in rule:
        raise ValueError(NO_DTSTART)
    parts: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in upper.split(";"))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or key.strip() in parts:
            raise ValueError(f"invalid rrule {rule!r}: {item!r} is not one NAME=VALUE part")
        parts[key.strip()] = value.strip()
    if "FREQ" not in parts:
        raise ValueError(f"rrule {rule!r} has no FREQ")
    if parts["FREQ"] not in _FREQS:
        raise ValueError(f"invalid rrule {rule!r}: FREQ must be one of {', '.join(_FREQS)}")
    count, until = parts.pop("COUNT", None), parts.pop("UNTIL", None)
    if count is not None and until is not None:
        raise ValueError(f"invalid rrule {rule!r}: COUNT and UNTIL must not both be set")
    if count is not None and not (count.isdigit() and 1 <= int(count) <= MAX_COUNT):
        raise ValueError(f"invalid rrule {rule!r}: COUNT must be from 1 to {MAX_COUNT:,}")
    interval = parts.get("INTERVAL", "1")
    if not (interval.isdigit() and int(interval) >= 1):
        raise ValueError(f"invalid rrule {rule!r}: INTERVAL must be 1 or more")
    wall_until, utc = _until(until, rule) if until is not None else (None, False)
    return RuleText(
        parts,
        freq=_FREQS[parts["FREQ"]],
        interval=int(interval),
        count=None if count is None else int(count),
        until=wall_until,
        until_utc=utc,
    )


def _until(value: str, rule: str) -> tuple[datetime, bool]:
    m = _UNTIL.match(value)
    try:
        if m is None:
            raise ValueError
        if m.group(2) is None:  # a date: the whole day, inclusive
            return datetime.strptime(m.group(1), "%Y%m%d") + timedelta(days=1, seconds=-1), False
        return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S"), bool(m.group(3))
    except (ValueError, OverflowError):
        raise ValueError(
            f"invalid rrule {rule!r}: UNTIL must be a date (20271231) or a date-time"
            " (20271231T180000 in the schedule's zone, 20271231T170000Z in UTC)"
        ) from None


@lru_cache(maxsize=1024)
def parse_rrule(rule: str, dtstart: datetime = DEFAULT_DTSTART) -> rrule:
    """The rule (without COUNT and UNTIL) from DTSTART; ValueError with a user message."""
    text = rule_text(rule)
    try:
        parsed = rrulestr(text.body, dtstart=dtstart)
        text.weekdays()
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        if "empty" in str(exc):  # dateutil: INTERVAL never lands on BYHOUR/BYMINUTE/BYSECOND
            raise ValueError(
                f"rrule {rule!r} never fires from its start {dtstart:%Y-%m-%d %H:%M:%S}:"
                " its INTERVAL steps never reach its BYHOUR/BYMINUTE/BYSECOND"
            ) from None
        raise ValueError(f"invalid rrule {rule!r}: {exc}") from None
    if not isinstance(parsed, rrule):
        raise ValueError(f"invalid rrule {rule!r}: expected one RRULE")
    # dateutil accepts these out of range, then fails mid-iteration (TypeError)
    for part, high in _TIME_PARTS:
        bad = sorted(v for v in text.ints(part) if not 0 <= v <= high)
        if bad:
            raise ValueError(
                f"invalid rrule {rule!r}: {part} must be from 0 to {high}, got {bad[0]}"
            )
    return parsed


def check_rrule(rule: str, dtstart: datetime) -> None:
    """ValueError unless the rule parses from DTSTART and its day filters can match.

    Whether it fires within a bound is the caller's (timing.check_spec) test.
    """
    parse_rrule(rule, dtstart)
    text = rule_text(rule)
    setpos = text.ints("BYSETPOS")
    if setpos:
        largest = _largest_period(text)
        if min(abs(p) for p in setpos) > largest:
            raise ValueError(
                f"rrule {rule!r} never fires: BYSETPOS selects beyond the {largest}"
                " occurrence(s) a period can hold"
            )
    weekdays = text.weekdays()
    nth_days = [d for d in weekdays if d.n]
    if text.freq != YEARLY and not (nth_days and text.freq == MONTHLY):
        # the same day filters, one evaluation per year instead of per day or second
        defaults = _defaults(text, dtstart)
        days = {k: v for k, v in defaults.items() if k in _DAY_KEYS} | _day_filters(text, weekdays)
        skeleton = rrule(YEARLY, dtstart=DEFAULT_DTSTART, byhour=0, byminute=0, bysecond=0, **days)
        if _after(skeleton, DEFAULT_DTSTART) is None:
            raise ValueError(f"rrule {rule!r} never fires: no day matches its BY* parts")


def _day_filters(text: RuleText, weekdays: tuple[weekday, ...]) -> dict[str, Any]:
    """The rule's day parts as written; an nth weekday is a plain one below MONTHLY."""
    filters: dict[str, Any] = {
        key: text.ints(part)
        for part, key in (
            ("BYMONTH", "bymonth"),
            ("BYMONTHDAY", "bymonthday"),
            ("BYYEARDAY", "byyearday"),
            ("BYWEEKNO", "byweekno"),
            ("BYEASTER", "byeaster"),
        )
        if part in text.parts
    }
    if weekdays:
        filters["byweekday"] = tuple({d.weekday for d in weekdays})
    return filters


def _defaults(text: RuleText, dtstart: datetime) -> dict[str, Any]:
    """The BY* parts RFC 5545 takes from DTSTART when the rule leaves them out."""
    given = text.parts
    found: dict[str, Any] = {}
    if not given.keys() & {"BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY", "BYEASTER"}:
        if text.freq == YEARLY:
            if "BYMONTH" not in given:
                found["bymonth"] = dtstart.month
            found["bymonthday"] = dtstart.day
        elif text.freq == MONTHLY:
            found["bymonthday"] = dtstart.day
        elif text.freq == WEEKLY:
            found["byweekday"] = dtstart.weekday()
    for part, unit, value in (
        ("BYHOUR", HOURLY, dtstart.hour),
        ("BYMINUTE", MINUTELY, dtstart.minute),
        ("BYSECOND", SECONDLY, dtstart.second),
    ):
        if part not in given and text.freq < unit:
            found[part.lower()] = value
    return found


def _largest_period(text: RuleText) -> int:
    """The most occurrences one period of the rule can produce (before BYSETPOS)."""
    days = {YEARLY: 366, MONTHLY: 31, WEEKLY: 7}.get(text.freq, 1)
    expanding = {  # time parts that expand a period rather than filter it
        YEARLY: ("BYHOUR", "BYMINUTE", "BYSECOND"),
        MONTHLY: ("BYHOUR", "BYMINUTE", "BYSECOND"),
        WEEKLY: ("BYHOUR", "BYMINUTE", "BYSECOND"),
        DAILY: ("BYHOUR", "BYMINUTE", "BYSECOND"),
        HOURLY: ("BYMINUTE", "BYSECOND"),
        MINUTELY: ("BYSECOND",),
        SECONDLY: (),
    }[text.freq]
    count = days
    for part in expanding:
        count *= len(text.ints(part) or (0,))
    return count


@dataclass(frozen=True, slots=True)
class RRuleSource:
    """A rule with its DTSTART (naive local wall time)."""

    rule: str
    dtstart: datetime

    @property
    def frequent(self) -> bool:
        return rule_text(self.rule).freq in (HOURLY, MINUTELY, SECONDLY)

    def next_wall(self, lo: datetime) -> datetime | None:
        end = wall_end(self.rule, self.dtstart)
        if end is not None and lo > end:
            return None
        base = parse_rrule(self.rule, self.dtstart)
        grain, periods = _periods_before(rule_text(self.rule), self.dtstart, lo)
        bucket = grain * max(1, _BUCKET // grain)
        anchored = periods // bucket * bucket - bucket
        if anchored > 0:
            base = _anchored(self.rule, self.dtstart, anchored)
        found = _after(base, lo)
        return None if found is None or (end is not None and found > end) else found


@lru_cache(maxsize=1024)
def wall_end(rule: str, dtstart: datetime) -> datetime | None:
    """The last wall time the rule may fire at: a naive UNTIL, or the COUNT-th occurrence."""
    text = rule_text(rule)
    if text.count is not None:
        occurrences = iter(parse_rrule(rule, dtstart))
        return next(islice(occurrences, text.count - 1, None), None)
    return None if text.until_utc else text.until


def _after(rule: rrule, lo: datetime) -> datetime | None:
    try:
        found: datetime | None = rule.after(lo, inc=True)
    except (ValueError, OverflowError):  # past year 9999
        return None
    return found


def _periods_before(text: RuleText, start: datetime, lo: datetime) -> tuple[int, int]:
    """(grain, whole periods from DTSTART to lo); re-anchoring moves by multiples of grain.

    MONTHLY/YEARLY move by whole years only, so DTSTART's day and month stay
    valid; periods is 0 when the rule must not be re-anchored.
    """
    if lo <= start:
        return 1, 0
    if text.freq in _UNIT:
        return 1, (lo - start) // (_UNIT[text.freq] * text.interval)
    if (start.month, start.day) == (2, 29):
        return 1, 0
    unit = 1 if text.freq == MONTHLY else 12
    months = (lo.year - start.year) * 12 + lo.month - start.month - 1
    step = math.lcm(text.interval * unit, 12)  # months per re-anchoring step
    grain = step // (text.interval * unit)
    return grain, max(0, months // step) * grain


@lru_cache(maxsize=512)
def _anchored(rule: str, dtstart: datetime, periods: int) -> rrule:
    """The same rule with DTSTART moved forward by whole periods.

    The BY* parts defaulted from the old DTSTART are passed explicitly, so
    the new DTSTART does not change them.
    """
    text = rule_text(rule)
    if text.freq in _UNIT:
        new_start = dtstart + _UNIT[text.freq] * text.interval * periods
    else:
        unit = 1 if text.freq == MONTHLY else 12
        new_start = dtstart + relativedelta(months=unit * text.interval * periods)
    return parse_rrule(rule, dtstart).replace(dtstart=new_start, **_defaults(text, dtstart))
