"""zones.year_offsets against a plain minute-by-minute scan, in zones with odd histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from beatd.timing.zones import year_offsets


def scanned(zone: ZoneInfo, year: int) -> list[tuple[datetime, timedelta, timedelta]]:
    found = []
    u = datetime(year, 1, 1, tzinfo=UTC)
    prev = (u - timedelta(seconds=1)).astimezone(zone).utcoffset()
    while u.year == year:
        off = u.astimezone(zone).utcoffset()
        if off != prev:
            m = u - timedelta(minutes=15)
            while m.astimezone(zone).utcoffset() == prev:
                m += timedelta(seconds=1)
            assert prev is not None and off is not None
            found.append((m.replace(tzinfo=None), prev, off))
            prev = off
        u += timedelta(minutes=15)
    return found


@pytest.mark.parametrize(
    ("zone_name", "year"),
    [
        ("America/New_York", 2026),
        ("Australia/Lord_Howe", 2026),
        ("Pacific/Chatham", 2025),
        ("Pacific/Apia", 2011),  # skipped 30 December 2011
        ("Europe/Moscow", 2011),  # permanent summer time, no fall back
        ("Europe/Moscow", 2014),
        ("Africa/Casablanca", 2012),  # DST suspended for Ramadan: four changes
        ("America/Caracas", 2016),  # a 30-minute shift
        ("Asia/Kolkata", 2026),
        ("UTC", 2026),
        ("Antarctica/Troll", 2026),  # a two-hour DST
    ],
)
def test_year_offsets_match_a_scan(zone_name: str, year: int) -> None:
    zone = ZoneInfo(zone_name)
    data = year_offsets(zone, year)
    got = [(t.at, t.before, t.after) for t in data.transitions]
    assert got == scanned(zone, year)
    assert (
        data.initial
        == (datetime(year, 1, 1, tzinfo=UTC) - timedelta(seconds=1)).astimezone(zone).utcoffset()
    )
