"""The next fires of many schedules, merged: pure, lazy, a heap of one entry per schedule.

Schedules that share their timing (the same cron or rrule in the same zone
and bounds) share its instants: each distinct timing is evaluated once per
call, so 100,000 schedules cost what their distinct timings cost.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from beatd import timing
from beatd.codec import check_instant
from beatd.errors import ConfigError, NotFound
from beatd.model import Cron, Every, Fire, Once, Schedule

MAX_LIMIT = 100_000  # fires one call may return: its cost is what it returns
StartAt = Callable[[Schedule], "datetime | None"]


class SharedTiming:
    """timing.next_after, remembered per (timing, instant) for the length of one call."""

    def __init__(self) -> None:
        self._memo: dict[tuple[object, ...], datetime | None] = {}

    def next_after(self, s: Schedule, after: datetime) -> datetime | None:
        if isinstance(s.spec, Every | Once):  # arithmetic: cheaper than a lookup
            return timing.next_after(s, after)
        hashed = isinstance(s.spec, Cron) and "h" in s.spec.expr.lower()  # H hashes the name
        key = (s.spec, s.timezone, s.start, s.end, s.name if hashed else "", after)
        try:
            return self._memo[key]
        except KeyError:
            found = self._memo[key] = timing.next_after(s, after)
            return found


def _instants(
    schedule: Schedule, after: datetime, first: datetime | None, shared: SharedTiming
) -> Iterator[datetime]:
    """The schedule's fires strictly after `after`, from `first` (inclusive) when given."""
    at = first if first is not None and first > after else shared.next_after(schedule, after)
    while at is not None:
        yield at
        at = shared.next_after(schedule, at)


_Head = tuple[datetime, str, int, Iterator[datetime]]


def _heads(
    schedules: list[Schedule], after: datetime, until: datetime | None, start_at: StartAt | None
) -> tuple[list[_Head], list[Schedule]]:
    """One heap entry per enabled schedule that fires in range: its first instant."""
    heap: list[_Head] = []
    by_index: list[Schedule] = []
    shared = SharedTiming()
    for s in schedules:
        if not s.enabled:
            continue
        first: datetime | None = None
        if start_at is not None:
            first = start_at(s)
            if first is None:
                continue
        instants = _instants(s, after, first, shared)
        at = next(instants, None)
        if at is not None and (until is None or at <= until):
            heap.append((at, s.name, len(by_index), instants))
            by_index.append(s)
    return heap, by_index


def upcoming(
    schedules: Iterable[Schedule],
    now: datetime,
    *,
    limit: int,
    after: datetime | None = None,
    until: datetime | None = None,
    schedule: str | None = None,
    start_at: StartAt | None = None,
) -> list[Fire]:
    """At most `limit` fires, ordered by instant then schedule name.

    `after` is exclusive (default: `now`), `until` inclusive. Disabled
    schedules are left out; `schedule` keeps only the schedule of that name
    (NotFound when there is none). `start_at`, when given, says where each
    schedule's fires begin (inclusive; e.g. the store's next undecided
    instant), or None for a schedule with no more fires.
    """
    if not 0 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit: must be from 0 to {MAX_LIMIT}, got {limit}")
    after = check_instant(after if after is not None else now, "after")
    if until is not None:
        until = check_instant(until, "until")
    chosen = list(schedules)
    if schedule is not None:
        chosen = [s for s in chosen if s.name == schedule]
        if not chosen:
            raise NotFound(f"no schedule named {schedule!r}")
    if limit == 0:
        return []

    heap, by_index = _heads(chosen, after, until, start_at)
    heapq.heapify(heap)

    fires: list[Fire] = []
    while heap and len(fires) < limit:
        at, name, index, instants = heap[0]
        fires.append(Fire.of(by_index[index], at))
        following = next(instants, None)
        if following is None or (until is not None and following > until):
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following, name, index, instants))
    return fires
