"""Fire times: pure functions of a schedule and an instant (SPEC §2, §3).

No clock reads, no I/O. Every datetime in and out is aware UTC; a naive one
raises ValueError. Cron and rrule schedules are matched on naive local wall
time (cron.py, rrules.py) and mapped to instants by the one DST rule in
zones.py; interval and once schedules are plain UTC arithmetic.

`start` and `end` are inclusive bounds on every kind. `max_fires`, `jitter`
and `enabled` are the planner's business, not this module's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from hashlib import blake2b
from zoneinfo import ZoneInfo

from beatd.durations import format_duration
from beatd.model import EPOCH, Cron, Every, Once, RRule, Schedule, Spec
from beatd.timing.cron import compile_cron, normalize_cron
from beatd.timing.rrules import DEFAULT_DTSTART, NO_DTSTART, RRuleSource, check_rrule, rule_text
from beatd.timing.zones import (
    MIN_YEAR,
    ONE_SECOND,
    WallSource,
    as_utc,
    from_naive_utc,
    local_wall,
    next_instant,
    to_naive_utc,
)

__all__ = [
    "BOUND_YEARS",
    "NO_DTSTART",
    "check_spec",
    "describe",
    "fires_between",
    "jitter_offset",
    "latest_at_or_before",
    "next_after",
    "normalize_cron",
]

_TINY = timedelta(microseconds=1)
_MS = timedelta(milliseconds=1)
_NO_OFFSET = timedelta(0)
_FIRST_WINDOW = timedelta(seconds=64)
_EARLIEST = datetime(MIN_YEAR + 1, 1, 1)
BOUND_YEARS = 100
_BOUND = timedelta(days=36525)  # 100 years: a schedule must fire at least this often
_CRON_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


def next_after(schedule: Schedule, after: datetime) -> datetime | None:
    """The first fire instant strictly after `after`, within start/end; None if none."""
    if isinstance(schedule.spec, Every):  # the planner's hot path: no naive round trip
        return _every_after(schedule, schedule.spec, as_utc(after))
    found = _next(schedule, _floor_to_start(schedule, to_naive_utc(after)))
    return None if found is None else from_naive_utc(found)


def fires_between(schedule: Schedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """Fire instants in (after, until], ascending."""
    limit = to_naive_utc(until)
    cursor = _floor_to_start(schedule, to_naive_utc(after))
    while True:
        found = _next(schedule, cursor)
        if found is None or found > limit:
            return
        yield from_naive_utc(found)
        cursor = found


def latest_at_or_before(
    schedule: Schedule, instant: datetime, not_before: datetime
) -> datetime | None:
    """The latest fire instant in [not_before, instant], or None.

    Cost is logarithmic in the span: interval and once are arithmetic; cron
    and rrule look back in doubling windows, then bisect the window that holds
    a fire.
    """
    hi, lo = as_utc(instant), as_utc(not_before)
    if schedule.start is not None:
        lo = max(lo, as_utc(schedule.start))
    end = _end(schedule)
    if end is not None:
        hi = min(hi, from_naive_utc(end))
    if lo > hi:
        return None
    spec = schedule.spec
    if isinstance(spec, Every):
        anchor = as_utc(spec.anchor)
        try:
            last = anchor + (hi - anchor) // spec.period * spec.period
        except OverflowError:
            return None
        return last if last >= lo else None
    if isinstance(spec, Once):
        at = as_utc(spec.at)
        return at if lo <= at <= hi else None
    left = max(lo.replace(tzinfo=None), _EARLIEST) - _TINY
    found = _latest_in(schedule, left, hi.replace(tzinfo=None))
    return None if found is None else from_naive_utc(found)


def check_spec(spec: Spec, zone: ZoneInfo, name: str, start: datetime | None = None) -> None:
    """Raise ValueError (one line, fit for a user) unless the spec is valid and fires.

    A cron or rrule schedule must fire within 100 years of its start (an
    rrule's DTSTART, a cron's 2000-01-01 when it has none) and, unless COUNT
    or UNTIL ends it, again within 100 years of that first fire.
    """
    if isinstance(spec, Cron | RRule):
        hashed = isinstance(spec, Cron) and "h" in spec.expr.lower()
        _check_recurring(spec, zone, name if hashed else "", start)
    elif isinstance(spec, Every):
        if spec.period < ONE_SECOND or spec.period % ONE_SECOND:
            raise ValueError(f"interval must be a whole number of seconds >= 1s, got {spec.period}")
        to_naive_utc(spec.anchor)
    else:
        to_naive_utc(spec.at)


@lru_cache(maxsize=4096)
def _check_recurring(spec: Cron | RRule, zone: ZoneInfo, name: str, start: datetime | None) -> None:
    """check_spec for cron and rrule; cached, as schedules mostly share their timing."""
    schedule = Schedule(name, spec, "-", timezone=zone, start=start)
    if isinstance(spec, Cron):
        compile_cron(normalize_cron(spec.expr), name)
        what, origin = f"cron expression {spec.expr!r}", start or _CRON_ORIGIN
    else:
        dtstart = _dtstart(schedule)
        check_rrule(spec.rule, dtstart)
        what, origin = f"rrule {spec.rule!r}", start or dtstart.replace(tzinfo=zone)
    _check_fires(schedule, what, as_utc(origin))


def _check_fires(schedule: Schedule, what: str, origin: datetime) -> None:
    first = next_after(schedule, origin - _TINY)
    if first is None:
        raise ValueError(f"{what} never fires")
    if first - origin > _BOUND:
        raise ValueError(
            f"{what} does not fire within {BOUND_YEARS} years of {origin:%Y-%m-%d %H:%M:%S} UTC"
            f" (first fire {first:%Y-%m-%d %H:%M:%S} UTC)"
        )
    if isinstance(schedule.spec, RRule) and rule_text(schedule.spec.rule).bounded:
        return
    second = next_after(schedule, first)
    if second is None or second - first > _BOUND:
        raise ValueError(
            f"{what} fires less often than once in {BOUND_YEARS} years"
            f" (fires at {first:%Y-%m-%d %H:%M:%S} UTC, then "
            + ("never)" if second is None else f"at {second:%Y-%m-%d %H:%M:%S} UTC)")
        )


def jitter_offset(name: str, instant: datetime, jitter: timedelta) -> timedelta:
    """A stable offset in [0, jitter), whole milliseconds, from (name, UTC instant)."""
    if jitter < _MS:  # no jitter (most schedules): skip the hash
        return _NO_OFFSET
    span = jitter // _MS
    key = f"{name}\x00{to_naive_utc(instant).isoformat()}".encode()
    digest = blake2b(key, digest_size=8, person=b"beatd-jitter").digest()
    return timedelta(milliseconds=int.from_bytes(digest, "big") % span)


def describe(spec: Spec) -> str:
    """Human text for a spec: cron in words, "every 1h30m", "RRULE ...", "once at ..."."""
    if isinstance(spec, Cron):
        return _describe_cron(spec.expr)
    if isinstance(spec, Every):
        text = f"every {format_duration(spec.period)}"
        if spec.anchor != EPOCH:
            text += f" from {spec.anchor.isoformat()}"
        return text
    if isinstance(spec, RRule):
        return f"RRULE {spec.rule}"
    return f"once at {spec.at.isoformat()}"


def _describe_cron(expr: str) -> str:
    from cron_descriptor import Options, get_description

    try:
        text = normalize_cron(expr)
        options = Options()  # attributes, not keywords: cron-descriptor 1.x takes none
        options.locale_code = "en_US"
        options.use_24hour_time_format = True
        return str(get_description(text, options))
    except Exception:  # cron_descriptor raises assorted types for what it cannot word
        return expr


def _every_after(schedule: Schedule, spec: Every, after: datetime) -> datetime | None:
    """next_after for intervals, on aware UTC (the same arithmetic as _next on naive UTC)."""
    if schedule.start is not None:
        after = max(after, as_utc(schedule.start) - _TINY)
    anchor = as_utc(spec.anchor)
    try:
        found = anchor + ((after - anchor) // spec.period + 1) * spec.period
    except OverflowError:
        return None
    return None if schedule.end is not None and found > as_utc(schedule.end) else found


# -- internals: naive UTC from here on ---------------------------------------


def _floor_to_start(schedule: Schedule, after: datetime) -> datetime:
    """Move `after` so that a fire exactly at `start` still counts."""
    if schedule.start is not None:
        return max(after, to_naive_utc(schedule.start) - _TINY)
    return after


def _next(schedule: Schedule, after: datetime) -> datetime | None:
    found = _next_unbounded(schedule, after)
    if found is None:
        return None
    end = _end(schedule)
    return None if end is not None and found > end else found


def _end(schedule: Schedule) -> datetime | None:
    """The last instant a schedule may fire (naive UTC): its end, or an rrule's UNTIL ...Z."""
    end = None if schedule.end is None else to_naive_utc(schedule.end)
    if isinstance(schedule.spec, RRule):
        text = rule_text(schedule.spec.rule)
        if text.until_utc and text.until is not None:
            end = text.until if end is None else min(end, text.until)
    return end


def _next_unbounded(schedule: Schedule, after: datetime) -> datetime | None:
    spec = schedule.spec
    if isinstance(spec, Every):
        anchor = to_naive_utc(spec.anchor)
        try:
            return anchor + ((after - anchor) // spec.period + 1) * spec.period
        except OverflowError:
            return None
    if isinstance(spec, Once):
        at = to_naive_utc(spec.at)
        return at if at > after else None
    return next_instant(_source(schedule), schedule.timezone, after)


def _source(schedule: Schedule) -> WallSource:
    spec = schedule.spec
    if isinstance(spec, Cron):
        return compile_cron(spec.expr, schedule.name)
    assert isinstance(spec, RRule)
    return RRuleSource(spec.rule, _dtstart(schedule))


def _dtstart(schedule: Schedule) -> datetime:
    """An rrule's DTSTART: the schedule's start in local wall time, else 1970-01-01 00:00."""
    if schedule.start is None:
        return DEFAULT_DTSTART
    return local_wall(schedule.timezone, to_naive_utc(schedule.start)).replace(microsecond=0)


def _latest_in(schedule: Schedule, left: datetime, right: datetime) -> datetime | None:
    """The latest fire in (left, right]: doubling windows back from right, then bisect."""
    width = _FIRST_WINDOW
    hi = right
    while hi > left:
        lo = left if hi - left <= width else hi - width
        first = _next(schedule, lo)
        if first is not None and first <= hi:
            return _bisect_latest(schedule, lo, hi, first)
        hi, width = lo, width * 2
    return None


def _bisect_latest(schedule: Schedule, lo: datetime, hi: datetime, first: datetime) -> datetime:
    """Given a fire `first` in (lo, hi], the latest fire in (lo, hi]."""
    while hi - lo > ONE_SECOND:
        mid = lo + (hi - lo) // 2
        found = _next(schedule, mid)
        if found is not None and found <= hi:
            lo, first = mid, found
        else:
            hi = mid
    while True:
        found = _next(schedule, first)
        if found is None or found > hi:
            return first
        first = found
