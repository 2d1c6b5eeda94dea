"""Cron and rrule in UTC (wall time is UTC, no offsets to walk) fire as in any zero-offset zone.

UTC schedules skip the offset-segment walk; Etc/GMT has the same wall time
but takes the walk, so the two must agree everywhere, up to the last year
beatd handles.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from beatd.model import Cron, RRule, Schedule, Spec
from beatd.timing import fires_between, latest_at_or_before, next_after

SPECS: list[Spec] = [
    Cron("*/7 * * * *"),
    Cron("* * * * * *"),
    Cron("30 2 * * *"),
    Cron("0 0 29 2 *"),
    Cron("59 23 31 12 *"),
    Cron("0 9 * * MON-FRI"),
    RRule("FREQ=DAILY;BYHOUR=9"),
    RRule("FREQ=HOURLY"),
]
EDGES = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(2, 1, 1, tzinfo=UTC),
    datetime(2027, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    datetime(9997, 12, 31, 23, 0, tzinfo=UTC),
    datetime(9997, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(9998, 6, 1, tzinfo=UTC),
]


def afters(spec: Spec) -> list[datetime]:
    rng = random.Random(20261127)
    found = [
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(4 * 365 * 86400))
        for _ in range(40)
    ]
    return found[:15] if isinstance(spec, RRule) else found + EDGES  # dateutil walks from 1970


@pytest.mark.parametrize("spec", SPECS, ids=[str(s) for s in SPECS])
@pytest.mark.parametrize("key", ["UTC", "Etc/UTC"])
def test_utc_fires_as_a_zero_offset_zone(spec: Spec, key: str) -> None:
    utc = Schedule("job", spec, "t", timezone=ZoneInfo(key))
    gmt = Schedule("job", spec, "t", timezone=ZoneInfo("Etc/GMT"))
    for after in afters(spec):
        assert next_after(utc, after) == next_after(gmt, after)
        window = after + timedelta(days=2)
        assert list(islice(fires_between(utc, after, window), 5)) == list(
            islice(fires_between(gmt, after, window), 5)
        )
        if after.year > 2:
            since = after - timedelta(days=1)
            assert latest_at_or_before(utc, after, since) == latest_at_or_before(gmt, after, since)
