"""Interval schedules against integer microseconds: anchor + k·period, start/end inclusive.

The planner asks `next_after` and `latest_at_or_before` of every interval
fire, on aware UTC without a naive round trip; these hold both to the
definition for instants in any zone, with bounds, anchors off the epoch grid
and microseconds, and to `fires_between` (the naive walk).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from beatd.model import EPOCH, Every, Schedule
from beatd.timing import fires_between, latest_at_or_before, next_after

ZONES = [
    UTC,
    ZoneInfo("UTC"),
    ZoneInfo("Europe/Berlin"),
    timezone(timedelta(hours=-9, minutes=-30)),
]
US = timedelta(microseconds=1)


def us(at: datetime) -> int:
    return (at - EPOCH) // US


def instant(micros: int) -> datetime:
    return EPOCH + micros * US


def expected_next(s: Schedule, spec: Every, after: datetime) -> datetime | None:
    a, p = us(spec.anchor), spec.period // US
    k = (us(after) - a) // p + 1
    if s.start is not None:
        k = max(k, -((a - us(s.start)) // p))  # the first k with a + k·p >= start
    found = a + k * p
    return None if s.end is not None and found > us(s.end) else instant(found)


def expected_latest(
    s: Schedule, spec: Every, at: datetime, not_before: datetime
) -> datetime | None:
    a, p = us(spec.anchor), spec.period // US
    hi = min(us(at), us(s.end)) if s.end is not None else us(at)
    lo = max(us(not_before), us(s.start)) if s.start is not None else us(not_before)
    found = a + (hi - a) // p * p
    return instant(found) if lo <= found <= hi else None


def schedules(count: int) -> list[tuple[Schedule, datetime]]:
    rng = random.Random(20261127)
    base = datetime(2026, 3, 29, 1, tzinfo=UTC)

    def near(spread: int) -> datetime:
        at = base + timedelta(seconds=rng.randrange(-spread, spread))
        at += rng.choice([0, rng.randrange(10**6)]) * US
        return at.astimezone(rng.choice(ZONES))

    found = []
    for _ in range(count):
        period = timedelta(seconds=rng.choice([1, 7, 17, 60, 3600, 86400 + 1]))
        anchor = EPOCH if rng.random() < 0.5 else near(10**8)
        start = near(86400) if rng.random() < 0.3 else None
        end = near(86400) if rng.random() < 0.3 else None
        schedule = Schedule("job", Every(period, anchor), "t", start=start, end=end)
        found.append((schedule, near(86400)))
    return found


def test_next_after_is_the_next_grid_point_within_bounds() -> None:
    for s, after in schedules(3000):
        assert isinstance(s.spec, Every)
        found = next_after(s, after)
        assert found == expected_next(s, s.spec, after)
        assert found is None or found.tzinfo is UTC


def test_latest_at_or_before_is_the_last_grid_point_within_bounds() -> None:
    rng = random.Random(7)
    for s, at in schedules(3000):
        assert isinstance(s.spec, Every)
        not_before = at - timedelta(seconds=rng.choice([0, 1, 17, 5000]))
        found = latest_at_or_before(s, at, not_before)
        assert found == expected_latest(s, s.spec, at, not_before)
        assert found is None or found.tzinfo is UTC


def test_next_after_walks_as_fires_between_does() -> None:
    for s, after in schedules(300):
        walked: list[datetime] = []
        at = next_after(s, after)
        while at is not None and at <= after + timedelta(hours=2) and len(walked) < 50:
            walked.append(at)
            at = next_after(s, at)
        between = list(islice(fires_between(s, after, after + timedelta(hours=2)), 50))
        assert walked == between


def test_an_interval_at_the_end_of_the_calendar_ends() -> None:
    s = Schedule("job", Every(timedelta(days=1)), "t")
    last = datetime(9999, 12, 31, tzinfo=UTC)
    assert next_after(s, last - US) == last
    assert next_after(s, last) is None
    assert latest_at_or_before(s, datetime.max.replace(tzinfo=UTC), last) == last


def test_a_naive_instant_is_refused() -> None:
    s = Schedule("job", Every(timedelta(seconds=17)), "t")
    with pytest.raises(ValueError, match="naive"):
        next_after(s, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        latest_at_or_before(s, datetime(2026, 1, 1), datetime(2025, 1, 1, tzinfo=UTC))
