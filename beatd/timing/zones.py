"""The one DST rule: maps local wall-clock matches to UTC instants.

A *wall source* answers "the first matching local wall time at or after this
one" on naive datetimes, with no notion of time zones. `next_instant` walks
the zone's UTC offset segments (stretches between transitions, during which
wall = utc + offset is a plain shift) and applies §3 of the spec:

- spring forward (a gap of wall times): a *fixed* source that matches any wall
  time inside the gap fires once, at the transition instant; a *frequent* one
  just skips the missing times;
- fall back (wall times repeat): a *fixed* source fires only at the first
  occurrence; a *frequent* one fires at both, in true UTC order.

Internally instants are naive UTC datetimes; the public layer converts.
Transitions are found by sampling the zone's offset every six hours and
bisecting to the second, cached per (zone, year); a change and its exact
reversal within six hours would be missed (tzdata has none).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

ONE_SECOND = timedelta(seconds=1)
_SAMPLE = timedelta(hours=6)
MIN_YEAR = 1  # instants are handled from year MIN_YEAR + 1 on ...
MAX_YEAR = 9998  # ... up to MAX_YEAR: room for offsets and one-year windows at both ends
_SEGMENTS_END = datetime(MAX_YEAR, 1, 1)  # `segments` stops here
UTC_KEYS = frozenset({"UTC", "Etc/UTC"})  # zones that are UTC itself, all year, every year


class WallSource(Protocol):
    """A recurrence on naive local wall time, whole seconds."""

    @property
    def frequent(self) -> bool:
        """True when it can fire more than once an hour (or every hour): §3."""
        ...

    def next_wall(self, lo: datetime) -> datetime | None:
        """The first matching naive wall time >= lo (lo is a whole second), or None."""
        ...


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime  # naive UTC, whole second: the first instant of the new offset
    before: timedelta
    after: timedelta


@dataclass(frozen=True, slots=True)
class YearOffsets:
    """Offsets of one zone over one UTC year: initial offset, then transitions."""

    start: datetime
    end: datetime
    initial: timedelta  # in effect just before `start`
    transitions: tuple[Transition, ...]


def _offset(zone: ZoneInfo, utc: datetime) -> timedelta:
    off = zone.utcoffset(zone.fromutc(utc.replace(tzinfo=zone)))
    assert off is not None
    return off


def _bisect(zone: ZoneInfo, lo: datetime, hi: datetime, lo_off: timedelta) -> datetime:
    """First whole second in (lo, hi] whose offset differs from lo_off."""
    while hi - lo > ONE_SECOND:
        mid = lo + timedelta(seconds=int((hi - lo).total_seconds()) // 2)
        if _offset(zone, mid) == lo_off:
            lo = mid
        else:
            hi = mid
    return hi


@lru_cache(maxsize=1024)
def year_offsets(zone: ZoneInfo, year: int) -> YearOffsets:
    start = datetime(year, 1, 1)
    end = datetime(year + 1, 1, 1)
    prev_at = start - ONE_SECOND
    prev_off = _offset(zone, prev_at)
    initial = prev_off
    found: list[Transition] = []
    at = start
    while True:
        at = min(at, end - ONE_SECOND)
        off = _offset(zone, at)
        cursor, cursor_off = prev_at, prev_off
        while cursor_off != off:  # several changes between two samples: find each
            when = _bisect(zone, cursor, at, cursor_off)
            new_off = _offset(zone, when)
            found.append(Transition(when, cursor_off, new_off))
            cursor, cursor_off = when, new_off
        if at == end - ONE_SECOND:
            break
        prev_at, prev_off = at, off
        at += _SAMPLE
    return YearOffsets(start, end, initial, tuple(found))


@dataclass(frozen=True, slots=True)
class Segment:
    """UTC [start, end) with one offset, and what surrounds it.

    `repeats_before` is the wall time below which walls of this segment
    repeat walls of the previous offset (after a fall back); `next` is the
    offset from `end` on.
    """

    start: datetime
    end: datetime
    offset: timedelta
    repeats_before: datetime
    next: timedelta


def _last_transition(zone: ZoneInfo, year: int, after: datetime) -> Transition | None:
    """The latest transition at or before `after`, looking back into last year."""
    for y in (year, year - 1):
        if y <= MIN_YEAR:
            break
        past = [t for t in year_offsets(zone, y).transitions if t.at <= after]
        if past:
            return past[-1]
    return None


def segments(zone: ZoneInfo, after: datetime) -> Iterator[Segment]:
    """Segments from the one holding the instants just after `after`, onward.

    Year boundaries are segment boundaries too (with no offset change), which
    keeps every step bounded even in zones without transitions.
    """
    year = after.year
    data = year_offsets(zone, year)
    last = _last_transition(zone, year, after)
    if last is not None:
        offset, start, repeats = last.after, max(last.at, data.start), last.at + last.before
    else:
        offset, start = data.initial, data.start
        repeats = start + offset
    todo = [t for t in data.transitions if t.at > after]
    while True:
        for t in todo:
            yield Segment(start, t.at, offset, repeats, t.after)
            offset, start, repeats = t.after, t.at, t.at + t.before
        year += 1
        if year > MAX_YEAR:
            return
        data = year_offsets(zone, year)
        yield Segment(start, data.start, offset, repeats, offset)
        start = data.start
        todo = list(data.transitions)


def next_instant(source: WallSource, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first instant (naive UTC) strictly after `after` (naive UTC) that fires."""
    if after.year > MAX_YEAR:
        return None
    after = max(after, datetime(MIN_YEAR + 1, 1, 1))
    first = after.replace(microsecond=0) + ONE_SECOND
    if zone.key in UTC_KEYS:  # wall time is UTC: no offsets to walk, no DST rule to apply
        found = source.next_wall(first)
        return found if found is not None and found < _SEGMENTS_END else None
    fixed = not source.frequent
    lo: datetime | None = first
    for seg in segments(zone, after):
        lo_wall = (lo if lo is not None else seg.start) + seg.offset
        lo = None
        if fixed and lo_wall < seg.repeats_before:
            lo_wall = seg.repeats_before
        wall = source.next_wall(lo_wall)
        if wall is None:
            if seg.next < seg.offset:  # walls repeat after this fall back: a bounded source
                continue  # (rrule UNTIL or COUNT) may still match the repeated ones
            return None
        if wall < seg.end + seg.offset:
            return wall - seg.offset
        # spring forward at seg.end: the gap is [end + offset, end + next)
        if fixed and seg.next > seg.offset and wall < seg.end + seg.next:
            return seg.end
    return None


def to_naive_utc(instant: datetime) -> datetime:
    """Aware -> naive UTC; ValueError for a naive datetime."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got naive {instant.isoformat()}")
    return instant.astimezone(UTC).replace(tzinfo=None)


def as_utc(instant: datetime) -> datetime:
    """Aware -> aware UTC; ValueError for a naive datetime. Free when already UTC."""
    if instant.tzinfo is UTC:
        return instant
    return from_naive_utc(to_naive_utc(instant))


def from_naive_utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC)


def local_wall(zone: ZoneInfo, utc: datetime) -> datetime:
    """Naive local wall time of a naive UTC instant."""
    return zone.fromutc(utc.replace(tzinfo=zone)).replace(tzinfo=None)
