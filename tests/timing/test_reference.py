"""The engine against the brute-force reference (timing_reference.py), by hypothesis.

Windows sit around every UTC offset change of several years of a few zones
known for odd transitions, found here by scanning utcoffset; the randomized
differential run over every zone and the whole grammar is test_differential.py.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import event, given, settings
from hypothesis import strategies as st
from timing_reference import CronReference
from timing_reference import reference_fires as scan

from beatd.model import Cron, Schedule
from beatd.timing import fires_between

LONG = os.environ.get("BEATD_LONG") == "1"
ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "UTC",
]
YEARS = range(2024, 2029)


def reference_fires(expr: str, zone: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    step = timedelta(seconds=1 if len(expr.split()) == 6 else 60)
    return scan(CronReference(expr), zone, after, until, step)


@cache
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """UTC instants where the zone's offset changes, found by scanning."""
    zone = ZoneInfo(zone_name)
    found = []
    u = datetime(YEARS.start, 1, 1, tzinfo=UTC)
    end = datetime(YEARS.stop, 1, 1, tzinfo=UTC)
    prev = u.astimezone(zone).utcoffset()
    while u < end:
        nxt = u + timedelta(hours=1)
        off = nxt.astimezone(zone).utcoffset()
        if off != prev:
            m = u
            while m.astimezone(zone).utcoffset() == prev:
                m += timedelta(minutes=1)
            found.append(m)
            prev = off
        u = nxt
    return tuple(found)


# -- the reference checks itself on hand-worked cases -----------------------


def test_reference_knows_the_named_cases() -> None:
    ny = ZoneInfo("America/New_York")
    day = datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 1, 8, tzinfo=UTC)
    fall = reference_fires("*/20 * * * *", ny, *day)
    assert [f.astimezone(ny).strftime("%H:%M%z") for f in fall][2:9] == [
        "01:00-0400",
        "01:20-0400",
        "01:40-0400",
        "01:00-0500",
        "01:20-0500",
        "01:40-0500",
        "02:00-0500",
    ]
    spring = datetime(2026, 3, 8, 5, tzinfo=UTC), datetime(2026, 3, 8, 9, tzinfo=UTC)
    assert reference_fires("30 2 * * *", ny, *spring) == [datetime(2026, 3, 8, 7, tzinfo=UTC)]
    assert reference_fires("30 1 * * *", ny, *day) == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC)]
    assert len(transitions("America/New_York")) == 2 * len(YEARS)
    assert transitions("Asia/Kolkata") == ()


# -- hypothesis --------------------------------------------------------------


def _ranges(low: int, high: int) -> st.SearchStrategy[str]:
    return st.tuples(st.integers(low, high), st.integers(low, high), st.integers(1, 7)).map(
        lambda t: f"{min(t[:2])}-{max(t[:2])}" + (f"/{t[2]}" if t[2] > 1 else "")
    )


def _lists(values: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    return st.lists(values, min_size=1, max_size=3, unique=True).map(
        lambda v: ",".join(map(str, v))
    )


SECONDS = st.one_of(
    st.sampled_from(["0", "30", "*/15", "0,30", "*/20", "*"]), st.integers(0, 59).map(str)
)
MINUTES = st.one_of(
    st.sampled_from(["0", "30", "*/20", "15,45", "*/30", "0-10/5", "*", "59", "45"]),
    st.integers(0, 59).map(str),
    _ranges(0, 59),
    _lists(st.integers(0, 59)),
)
HOURS = st.one_of(
    st.sampled_from(["0", "1", "2", "3", "1-3", "*/2", "*", "0-23", "2,3", "1,2", "0-3"]),
    st.integers(0, 3).map(str),
    st.integers(0, 23).map(str),
    _ranges(0, 4),
    _lists(st.integers(0, 5)),
)
STAR = st.just("*")
DOMS = st.one_of(
    STAR,
    STAR,
    STAR,
    st.sampled_from(["*/2", "1-15", "8-14", "1-31", "31"]),
    st.integers(1, 31).map(str),
    _lists(st.integers(1, 31)),
)
MONTHS_FIELD = st.one_of(
    STAR, STAR, STAR, st.sampled_from(["3,4,10,11", "MAR-NOV", "*/2", "4", "10", "9-12", "jan"])
)
DOWS = st.one_of(
    STAR,
    STAR,
    STAR,
    st.sampled_from(["SUN", "0", "7", "MON-FRI", "6,0", "*/2", "1-5", "sat", "0-6"]),
    st.integers(0, 7).map(str),
)


DAY_FIELDS = st.tuples(DOMS, MONTHS_FIELD, DOWS).map(" ".join)


@st.composite
def five_field(draw: st.DrawFn) -> str:
    days = st.one_of(st.just("* * *"), st.just("* * *"), st.just("* * *"), DAY_FIELDS)
    return " ".join(draw(s) for s in (MINUTES, HOURS, days))


@st.composite
def window(draw: st.DrawFn, zone_name: str, width: timedelta) -> tuple[datetime, datetime]:
    moments = transitions(zone_name)
    if moments:
        centre = draw(st.sampled_from(moments))
    else:
        centre = datetime(draw(st.sampled_from(YEARS)), 1, 1, tzinfo=UTC) + timedelta(
            days=draw(st.integers(0, 364)), hours=draw(st.integers(0, 23))
        )
    offset = draw(st.integers(-int(width.total_seconds()), 0))
    after = centre + timedelta(seconds=offset)
    return after, after + width


def _engine(expr: str, zone: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    schedule = Schedule("ref", Cron(expr), "t", timezone=zone)
    return list(fires_between(schedule, after, until))


@settings(max_examples=3000 if LONG else 500, deadline=None)
@given(data=st.data(), expr=five_field(), zone_name=st.sampled_from(ZONES))
def test_five_field_matches_reference(data: st.DataObject, expr: str, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    after, until = data.draw(window(zone_name, timedelta(hours=27)))
    expected = reference_fires(expr, zone, after, until)
    event("fires" if expected else "no fire in window")
    event("frequent" if CronReference(expr).frequent else "fixed")
    if not CronReference(expr).frequent and set(expected) & set(transitions(zone_name)):
        event("fixed job fires at a transition")
    assert _engine(expr, zone, after, until) == expected


@settings(max_examples=600 if LONG else 60, deadline=None)
@given(data=st.data(), expr=five_field(), sec=SECONDS, zone_name=st.sampled_from(ZONES))
def test_six_field_matches_reference(
    data: st.DataObject, expr: str, sec: str, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    expr = f"{sec} {expr}"
    after, until = data.draw(window(zone_name, timedelta(hours=3)))
    after += timedelta(microseconds=data.draw(st.integers(0, 999_999)))
    assert _engine(expr, zone, after, until) == reference_fires(expr, zone, after, until)


@st.composite
def transition_cases(draw: st.DrawFn) -> tuple[str, ZoneInfo, datetime, datetime]:
    """Expressions aimed at the wall times next to a transition: gaps and repeats."""
    zone_name = draw(st.sampled_from([z for z in ZONES if transitions(z)]))
    zone = ZoneInfo(zone_name)
    moment = draw(st.sampled_from(transitions(zone_name)))
    wall = moment.astimezone(zone).replace(tzinfo=None) - timedelta(
        minutes=draw(st.integers(-30, 150))
    )
    minute = str(wall.minute)
    if draw(st.booleans()):
        minute += "," + str(draw(st.integers(0, 59)))
    hour = str(wall.hour)
    if draw(st.booleans()):
        hour += "," + str(draw(st.integers(0, 23)))
    expr = f"{minute} {hour} * * *"
    after = moment - timedelta(seconds=draw(st.integers(0, 27 * 3600)))
    return expr, zone, after, after + timedelta(hours=27)


@settings(max_examples=1500 if LONG else 300, deadline=None)
@given(case=transition_cases())
def test_transition_walls_match_reference(case: tuple[str, ZoneInfo, datetime, datetime]) -> None:
    expr, zone, after, until = case
    expected = reference_fires(expr, zone, after, until)
    if not CronReference(expr).frequent and set(expected) & set(transitions(str(zone))):
        event("fixed job fires at a transition")
    assert _engine(expr, zone, after, until) == expected
