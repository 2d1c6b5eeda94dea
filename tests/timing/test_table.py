"""Named fire-time cases, one row each: the spec's examples and the DST corners."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from beatd.model import EPOCH, Cron, Every, Once, RRule, Schedule, Spec
from beatd.timing import (
    check_spec,
    describe,
    fires_between,
    jitter_offset,
    latest_at_or_before,
    next_after,
    normalize_cron,
)
from beatd.timing.cron import CronSource, _compile, compile_cron

NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
APIA = ZoneInfo("Pacific/Apia")
UTC_ZONE = ZoneInfo("UTC")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type, misc]


def sched(spec: Spec | str, zone: ZoneInfo = UTC_ZONE, name: str = "job", **kw: object) -> Schedule:
    if isinstance(spec, str):
        spec = Cron(spec)
    return Schedule(name, spec, "tasks.t", timezone=zone, **kw)  # type: ignore[arg-type]


def local_times(schedule: Schedule, after: datetime, until: datetime) -> list[str]:
    """Fires in (after, until] as local "MM-DD HH:MM:SS+ZZZZ" strings."""
    return [
        f.astimezone(schedule.timezone).strftime("%m-%d %H:%M:%S%z")
        for f in fires_between(schedule, after, until)
    ]


# -- cron across DST ---------------------------------------------------------

DST_CASES = [
    pytest.param(
        "30 1 * * *",
        NY,
        utc(2026, 10, 31, 0),
        utc(2026, 11, 2, 12),
        ["10-31 01:30:00-0400", "11-01 01:30:00-0400", "11-02 01:30:00-0500"],
        id="fixed-ny-fall-back-fires-once-at-first-occurrence",
    ),
    pytest.param(
        "30 2 * * *",
        NY,
        utc(2026, 3, 7, 12),
        utc(2026, 3, 9, 12),
        ["03-08 03:00:00-0400", "03-09 02:30:00-0400"],
        id="fixed-ny-spring-forward-fires-at-0300-edt",
    ),
    pytest.param(
        "0 2,3 * * *",
        NY,
        utc(2026, 3, 8, 0),
        utc(2026, 3, 8, 12),
        ["03-08 03:00:00-0400"],
        id="fixed-gap-fire-and-regular-0300-fire-are-one-fire",
    ),
    pytest.param(
        "0 9,17 * * *",
        APIA,
        utc(2011, 12, 29, 12),
        utc(2011, 12, 31, 12),
        [
            "12-29 09:00:00-1000",
            "12-29 17:00:00-1000",
            "12-31 00:00:00+1400",
            "12-31 09:00:00+1400",
            "12-31 17:00:00+1400",
        ],
        id="fixed-apia-skipped-day-several-gap-times-collapse-into-one-fire",
    ),
    pytest.param(
        "15,45 2 * * *",
        NY,
        utc(2026, 3, 7, 12),
        utc(2026, 3, 9, 12),
        ["03-09 02:15:00-0400", "03-09 02:45:00-0400"],
        id="two-minutes-is-frequent-per-spec-gap-times-skipped",
    ),
    pytest.param(
        "15,45 1 * * *",
        NY,
        utc(2026, 11, 1, 4),
        utc(2026, 11, 1, 8),
        [
            "11-01 01:15:00-0400",
            "11-01 01:45:00-0400",
            "11-01 01:15:00-0500",
            "11-01 01:45:00-0500",
        ],
        id="two-minutes-is-frequent-per-spec-fires-at-both-occurrences",
    ),
    pytest.param(
        "*/20 * * * *",
        NY,
        utc(2026, 11, 1, 4, 50),
        utc(2026, 11, 1, 7, 0),
        [
            "11-01 01:00:00-0400",
            "11-01 01:20:00-0400",
            "11-01 01:40:00-0400",
            "11-01 01:00:00-0500",
            "11-01 01:20:00-0500",
            "11-01 01:40:00-0500",
            "11-01 02:00:00-0500",
        ],
        id="frequent-ny-fall-back-fires-at-both-occurrences-in-utc-order",
    ),
    pytest.param(
        "*/20 * * * *",
        NY,
        utc(2026, 3, 8, 6, 30),
        utc(2026, 3, 8, 7, 30),
        ["03-08 01:40:00-0500", "03-08 03:00:00-0400", "03-08 03:20:00-0400"],
        id="frequent-ny-spring-forward-skips-missing-times",
    ),
    pytest.param(
        "0 1 * * *",
        LONDON,
        utc(2026, 10, 24, 12),
        utc(2026, 10, 26, 12),
        ["10-25 01:00:00+0100", "10-26 01:00:00+0000"],
        id="fixed-london-fall-back-once",
    ),
    pytest.param(
        "15 2 * * *",
        LORD_HOWE,
        utc(2026, 10, 3, 12),
        utc(2026, 10, 4, 18),
        ["10-04 02:30:00+1100", "10-05 02:15:00+1100"],
        id="fixed-lord-howe-half-hour-gap-fires-at-0230",
    ),
    pytest.param(
        "45 1 * * *",
        LORD_HOWE,
        utc(2026, 4, 4, 12),
        utc(2026, 4, 5, 18),
        ["04-05 01:45:00+1100", "04-06 01:45:00+1030"],
        id="fixed-lord-howe-half-hour-repeat-fires-once",
    ),
    pytest.param(
        "*/15 1 * * *",
        LORD_HOWE,
        utc(2026, 4, 4, 12),
        utc(2026, 4, 4, 17),
        [
            "04-05 01:00:00+1100",
            "04-05 01:15:00+1100",
            "04-05 01:30:00+1100",
            "04-05 01:45:00+1100",
            "04-05 01:30:00+1030",
            "04-05 01:45:00+1030",
        ],
        id="frequent-lord-howe-repeats-only-the-last-half-hour",
    ),
]


@pytest.mark.parametrize(("expr", "zone", "after", "until", "expected"), DST_CASES)
def test_cron_across_dst(
    expr: str, zone: ZoneInfo, after: datetime, until: datetime, expected: list[str]
) -> None:
    assert local_times(sched(expr, zone), after, until) == expected


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        pytest.param(utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 5, 40), id="from-0130a"),
        pytest.param(utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 6, 0), id="from-0145a-to-0100b"),
        pytest.param(utc(2026, 11, 1, 6, 0), utc(2026, 11, 1, 6, 20), id="from-0100b"),
        pytest.param(utc(2026, 11, 1, 6, 41), utc(2026, 11, 1, 7, 0), id="from-0141b-to-0200"),
    ],
)
def test_next_after_inside_the_repeated_hour(after: datetime, expected: datetime) -> None:
    assert next_after(sched("*/20 * * * *", NY), after) == expected


@pytest.mark.parametrize("zone", [NY, LONDON, LORD_HOWE, ZoneInfo("Pacific/Chatham")])
def test_hourly_spellings_behave_alike(zone: ZoneInfo) -> None:
    for after in (utc(2026, 3, 7), utc(2026, 4, 3), utc(2026, 9, 25), utc(2026, 10, 30)):
        until = after + timedelta(days=10)
        star = list(fires_between(sched("0 * * * *", zone), after, until))
        ranged = list(fires_between(sched("0 0-23 * * *", zone), after, until))
        assert star == ranged
        assert len(star) > 200


def test_hourly_fires_twice_in_the_repeated_hour() -> None:
    fires = local_times(sched("0 0-23 * * *", NY), utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 7))
    assert fires == ["11-01 01:00:00-0400", "11-01 01:00:00-0500", "11-01 02:00:00-0500"]


# -- cron syntax ---------------------------------------------------------------

SYNTAX_CASES = [
    pytest.param(
        "30 */15 * * * *",
        utc(2026, 1, 1),
        ["01-01 00:00:30+0000", "01-01 00:15:30+0000", "01-01 00:30:30+0000"],
        id="six-fields-seconds-first",
    ),
    pytest.param(
        "*/20 0 0 * * *",
        utc(2026, 1, 1),
        ["01-01 00:00:20+0000", "01-01 00:00:40+0000", "01-02 00:00:00+0000"],
        id="six-fields-every-20-seconds-of-minute-0",
    ),
    pytest.param(
        "0 0 L * *",
        utc(2028, 1, 15),
        ["01-31 00:00:00+0000", "02-29 00:00:00+0000", "03-31 00:00:00+0000"],
        id="L-last-day-of-month-leap-february",
    ),
    pytest.param(
        "0 0 15W * *",
        utc(2026, 7, 20),
        ["08-14 00:00:00+0000", "09-15 00:00:00+0000", "10-15 00:00:00+0000"],
        id="W-saturday-15th-moves-to-friday",
    ),
    pytest.param(
        "0 0 1W * *",
        utc(2026, 7, 20),
        ["08-03 00:00:00+0000", "09-01 00:00:00+0000", "10-01 00:00:00+0000"],
        id="W-saturday-1st-moves-to-monday-3rd",
    ),
    pytest.param(
        "0 0 * * FRI#2",
        utc(2026, 1, 1),
        ["01-09 00:00:00+0000", "02-13 00:00:00+0000", "03-13 00:00:00+0000"],
        id="hash-second-friday",
    ),
    pytest.param(
        "0 0 * * 5L",
        utc(2026, 1, 1),
        ["01-30 00:00:00+0000", "02-27 00:00:00+0000", "03-27 00:00:00+0000"],
        id="5L-last-friday",
    ),
    pytest.param(
        "0 0 * * L5",
        utc(2026, 1, 1),
        ["01-30 00:00:00+0000", "02-27 00:00:00+0000", "03-27 00:00:00+0000"],
        id="L5-last-friday-croniter-spelling",
    ),
    pytest.param(
        "0 0 1 * MON",
        utc(2026, 1, 25),
        ["01-26 00:00:00+0000", "02-01 00:00:00+0000", "02-02 00:00:00+0000"],
        id="vixie-or-dom-1-or-monday",
    ),
    pytest.param(
        "0 0 * * MON",
        utc(2026, 1, 25),
        ["01-26 00:00:00+0000", "02-02 00:00:00+0000", "02-09 00:00:00+0000"],
        id="dom-star-means-mondays-only",
    ),
    pytest.param(
        "0 0 */2 * MON",
        utc(2026, 1, 1),
        ["01-05 00:00:00+0000", "01-19 00:00:00+0000", "02-09 00:00:00+0000"],
        id="dom-starting-with-star-is-and-odd-mondays",
    ),
    pytest.param(
        "0 0 1-31 * MON",
        utc(2026, 1, 1),
        ["01-02 00:00:00+0000", "01-03 00:00:00+0000", "01-04 00:00:00+0000"],
        id="dom-1-31-spelled-without-star-is-or-every-day",
    ),
    pytest.param(
        "0 12 * JAN-MAR/2 SUN,sat",
        utc(2026, 2, 20),
        ["03-01 12:00:00+0000", "03-07 12:00:00+0000", "03-08 12:00:00+0000"],
        id="names-ranges-steps-lists",
    ),
    pytest.param(
        "0 0 29 2 *",
        utc(2026, 1, 1),
        ["02-29 00:00:00+0000", "02-29 00:00:00+0000", "02-29 00:00:00+0000"],
        id="feb-29-every-leap-year",
    ),
    pytest.param(
        "0 0 * * 7",
        utc(2026, 1, 1),
        ["01-04 00:00:00+0000", "01-11 00:00:00+0000", "01-18 00:00:00+0000"],
        id="dow-7-is-sunday",
    ),
    pytest.param(
        "5 4-4 * * *",
        utc(2026, 1, 1),
        ["01-01 04:05:00+0000", "01-02 04:05:00+0000", "01-03 04:05:00+0000"],
        id="equal-range-is-one-value",
    ),
    # one-value ranges spelled differently at each end (croniter widens them to the field)
    pytest.param(
        "30 1 * 1-2 Sat-6",
        utc(2026, 1, 1),
        ["01-03 01:30:00+0000", "01-10 01:30:00+0000", "01-17 01:30:00+0000"],
        id="one-value-range-name-and-number-dow",
    ),
    pytest.param(
        "0 0 1 11-Nov *",
        utc(2026, 1, 1),
        ["11-01 00:00:00+0000", "11-01 00:00:00+0000", "11-01 00:00:00+0000"],
        id="one-value-range-number-and-name-month",
    ),
    pytest.param(
        "0 5-05 * * *",
        utc(2026, 1, 1),
        ["01-01 05:00:00+0000", "01-02 05:00:00+0000", "01-03 05:00:00+0000"],
        id="one-value-range-leading-zero-hour",
    ),
    pytest.param(
        "0 0 1-01 * *",
        utc(2026, 1, 1),
        ["02-01 00:00:00+0000", "03-01 00:00:00+0000", "04-01 00:00:00+0000"],
        id="one-value-range-leading-zero-dom",
    ),
    pytest.param(
        "0 0 * * 6-sat/2",
        utc(2026, 1, 1),
        ["01-03 00:00:00+0000", "01-10 00:00:00+0000", "01-17 00:00:00+0000"],
        id="one-value-range-with-a-step",
    ),
    pytest.param(
        "0 0 * * FRI-MON",
        utc(2026, 1, 1),
        ["01-02 00:00:00+0000", "01-03 00:00:00+0000", "01-04 00:00:00+0000"],
        id="reversed-range-wraps-the-week",
    ),
    pytest.param(
        "0 0 * * 7-0",
        utc(2026, 1, 1),
        ["01-04 00:00:00+0000", "01-11 00:00:00+0000", "01-18 00:00:00+0000"],
        id="sunday-to-sunday-is-sunday",
    ),
    pytest.param(
        "0 18 LW * *",
        utc(2026, 1, 1),
        ["01-30 18:00:00+0000", "02-27 18:00:00+0000", "03-31 18:00:00+0000"],
        id="LW-last-weekday-of-the-month",  # 2026-01-31 is a Saturday, 02-28 too
    ),
    pytest.param(
        "0 18 LW * *",
        utc(2026, 5, 1),
        ["05-29 18:00:00+0000", "06-30 18:00:00+0000", "07-31 18:00:00+0000"],
        id="LW-sunday-month-end-goes-back-to-friday",  # 2026-05-31 is a Sunday
    ),
    pytest.param(
        "0 0 * * MON#1,FRI",
        utc(2026, 1, 1),
        ["01-02 00:00:00+0000", "01-05 00:00:00+0000", "01-09 00:00:00+0000"],
        id="nth-weekday-and-plain-weekday-in-one-list",
    ),
]


@pytest.mark.parametrize(("expr", "after", "expected"), SYNTAX_CASES)
def test_cron_syntax(expr: str, after: datetime, expected: list[str]) -> None:
    schedule = sched(expr)
    fires = []
    cursor: datetime | None = after
    for _ in expected:
        assert cursor is not None
        cursor = next_after(schedule, cursor)
        assert cursor is not None
        fires.append(cursor.strftime("%m-%d %H:%M:%S%z"))
    assert fires == expected


def test_feb_29_years() -> None:
    fires = list(fires_between(sched("0 0 29 2 *"), utc(2026, 1, 1), utc(2105, 1, 1)))
    assert [f.year for f in fires][:3] == [2028, 2032, 2036]
    assert 2100 not in [f.year for f in fires]


MACROS = [
    ("@hourly", "0 * * * *", utc(2026, 5, 5, 13)),
    ("@daily", "0 0 * * *", utc(2026, 5, 6)),
    ("@midnight", "0 0 * * *", utc(2026, 5, 6)),
    ("@weekly", "0 0 * * 0", utc(2026, 5, 10)),
    ("@monthly", "0 0 1 * *", utc(2026, 6, 1)),
    ("@yearly", "0 0 1 1 *", utc(2027, 1, 1)),
    ("@annually", "0 0 1 1 *", utc(2027, 1, 1)),
]


@pytest.mark.parametrize(("macro", "text", "first"), [pytest.param(*m, id=m[0]) for m in MACROS])
def test_macros(macro: str, text: str, first: datetime) -> None:
    assert normalize_cron(macro) == text
    assert normalize_cron(macro.upper()) == text
    assert next_after(sched(macro), utc(2026, 5, 5, 12, 30)) == first
    assert next_after(sched(text), utc(2026, 5, 5, 12, 30)) == first


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("  */5   *  * * * ", "*/5 * * * *", id="blanks-collapse"),
        pytest.param("0 30 9 * * MON-FRI", "0 30 9 * * MON-FRI", id="six-fields-kept"),
    ],
)
def test_normalize_cron(given: str, expected: str) -> None:
    assert normalize_cron(given) == expected


def test_hash_is_stable_per_name_and_differs_between_names() -> None:
    window = (utc(2026, 1, 1), utc(2026, 1, 8))
    firsts = {}
    for name in ("alpha", "beta", "gamma", "delta"):
        a = list(fires_between(sched("H H * * *", name=name), *window))
        _compile.cache_clear()  # a fresh compile hashes the same
        b = list(fires_between(sched("H H * * *", name=name), *window))
        assert a == b
        assert len(a) == 7
        firsts[name] = a[0].time()
    assert len(set(firsts.values())) > 1


def test_hash_day_of_month_stays_within_1_to_28() -> None:
    days = {compile_cron("0 0 H * *", f"job-{i}").days_in(2026, 2) for i in range(200)}
    assert all(len(d) == 1 and 1 <= d[0] <= 28 for d in days)
    assert len(days) > 10


# -- interval ------------------------------------------------------------------


def test_interval_fires_on_the_epoch_grid() -> None:
    every5 = sched(Every(timedelta(minutes=5)))
    assert local_times(every5, utc(2026, 1, 1, 9, 58, 7), utc(2026, 1, 1, 10, 10)) == [
        "01-01 10:00:00+0000",
        "01-01 10:05:00+0000",
        "01-01 10:10:00+0000",
    ]


def test_interval_custom_anchor() -> None:
    anchored = sched(Every(timedelta(minutes=5), anchor=utc(2020, 6, 1, 0, 2, 30)))
    assert local_times(anchored, utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 10)) == [
        "01-01 10:02:30+0000",
        "01-01 10:07:30+0000",
    ]
    # before the anchor too: anchor + k*period for negative k
    assert next_after(anchored, utc(2000, 1, 1)) == utc(2000, 1, 1, 0, 2, 30)


@pytest.mark.parametrize("seconds", [7, 90, 3599, 86400 + 1])
def test_interval_never_drifts_over_a_million_periods(seconds: int) -> None:
    period = timedelta(seconds=seconds)
    anchor = utc(2001, 2, 3, 4, 5, 6)
    schedule = sched(Every(period, anchor=anchor))
    k = 1_000_000 if seconds < 3600 else 100_000
    target = anchor + k * period
    assert next_after(schedule, target - timedelta(microseconds=1)) == target
    assert next_after(schedule, target) == target + period
    assert latest_at_or_before(schedule, target + period / 2, EPOCH) == target
    walked = anchor
    for _ in range(1000):
        walked_next = next_after(schedule, walked)
        assert walked_next is not None
        walked = walked_next
    assert walked == anchor + 1000 * period


# -- rrule ---------------------------------------------------------------------


def test_rrule_last_friday_berlin_across_dst() -> None:
    rule = sched(RRule("FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18"), BERLIN)
    fires = list(fires_between(rule, utc(2026, 2, 1), utc(2026, 11, 30)))
    assert [f.astimezone(BERLIN).strftime("%m-%d %H:%M%z") for f in fires] == [
        "02-27 18:00+0100",
        "03-27 18:00+0100",
        "04-24 18:00+0200",
        "05-29 18:00+0200",
        "06-26 18:00+0200",
        "07-31 18:00+0200",
        "08-28 18:00+0200",
        "09-25 18:00+0200",
        "10-30 18:00+0100",
        "11-27 18:00+0100",
    ]


def test_rrule_hourly_fires_twice_in_the_repeated_hour() -> None:
    hourly = sched(RRule("FREQ=HOURLY"), NY)
    assert local_times(hourly, utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 7, 30)) == [
        "11-01 01:00:00-0400",
        "11-01 01:00:00-0500",
        "11-01 02:00:00-0500",
    ]


def test_rrule_daily_in_the_gap_fires_after_it() -> None:
    daily = sched(RRule("FREQ=DAILY;BYHOUR=2;BYMINUTE=30"), NY)
    assert local_times(daily, utc(2026, 3, 7, 12), utc(2026, 3, 9, 12)) == [
        "03-08 03:00:00-0400",
        "03-09 02:30:00-0400",
    ]


def test_rrule_start_is_dtstart_in_local_wall_time() -> None:
    start = datetime(2026, 1, 5, 9, 30, tzinfo=BERLIN).astimezone(UTC)
    weekly = sched(RRule("FREQ=WEEKLY;INTERVAL=2"), BERLIN, start=start)
    assert local_times(weekly, utc(2025, 1, 1), utc(2026, 2, 5)) == [
        "01-05 09:30:00+0100",
        "01-19 09:30:00+0100",
        "02-02 09:30:00+0100",
    ]


def test_rrule_minutely_far_from_1970_keeps_its_1970_grid() -> None:
    """Re-anchored near `after`, yet on the wall-time grid 1970-01-01 00:00 + 7k minutes."""
    minutely = sched(RRule("FREQ=MINUTELY;INTERVAL=7"), NY)
    grid = timedelta(minutes=7)
    first = next_after(minutely, utc(2026, 3, 8, 6, 55))  # 01:55 EST, just before the gap
    assert first is not None
    wall = first.astimezone(NY).replace(tzinfo=None)
    assert (wall - datetime(1970, 1, 1)) % grid == timedelta(0)
    assert datetime(2026, 3, 8, 1, 55) < wall <= datetime(2026, 3, 8, 2, 2)
    if wall.hour == 1:  # the next grid point falls in the gap: skipped (frequent)
        nxt = next_after(minutely, first)
        assert nxt is not None
        nxt_wall = nxt.astimezone(NY).replace(tzinfo=None)
        assert (nxt_wall - datetime(1970, 1, 1)) % grid == timedelta(0)
        assert datetime(2026, 3, 8, 3, 0) <= nxt_wall < datetime(2026, 3, 8, 3, 7)


START_0115 = utc(2026, 1, 1, 1, 15, 20)
MONDAY_23 = utc(2026, 6, 1, 23)  # 2026-06-01 is a Monday


@pytest.mark.parametrize(
    ("rule", "start", "message"),
    [
        pytest.param(
            "DTSTART:20260101T000000\nRRULE:FREQ=DAILY",
            None,
            "set the schedule's start",
            id="dtstart",
        ),
        pytest.param("FREQ=SOMETIMES", None, "invalid rrule", id="bad-freq"),
        pytest.param("BYHOUR=3", None, "FREQ", id="no-freq"),
        pytest.param("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", None, "never fires", id="never"),
        pytest.param("FREQ=SECONDLY;BYSETPOS=2", None, "BYSETPOS", id="setpos-beyond-period"),
        pytest.param(
            "FREQ=DAILY;BYSETPOS=3;BYHOUR=1,2", None, "BYSETPOS", id="setpos-beyond-times"
        ),
        pytest.param(
            "FREQ=MINUTELY;BYMONTH=4;BYMONTHDAY=31", None, "no day", id="no-day-sub-daily"
        ),
        pytest.param(
            "FREQ=MONTHLY;BYDAY=5FR;BYMONTHDAY=1", None, "never fires", id="fifth-friday-1st"
        ),
        pytest.param(
            "FREQ=DAILY;UNTIL=2027-01-01", None, "UNTIL must be a date", id="until-garbage"
        ),
        pytest.param(
            "FREQ=DAILY;COUNT=2;UNTIL=20270101", None, "COUNT and UNTIL", id="count-until"
        ),
        pytest.param("FREQ=DAILY;COUNT=0", None, "COUNT must be from 1 to 10,000", id="count-0"),
        pytest.param("FREQ=DAILY;COUNT=10001", None, "COUNT must be from 1", id="count-too-many"),
        pytest.param(
            "FREQ=DAILY;UNTIL=19691231T000000Z", None, "never fires", id="until-before-start"
        ),
        pytest.param(
            "FREQ=HOURLY;BYHOUR=0;INTERVAL=3",
            START_0115,
            "never fires from its start 2026-01-01 01:15:20",
            id="hourly-grid-from-start-misses-byhour",  # passed, then upcoming() raised ValueError
        ),
        pytest.param(
            "FREQ=YEARLY;INTERVAL=9000",
            None,
            "less often than once in 100 years",
            id="yearly-interval-9000",  # was accepted and never fired
        ),
        pytest.param(
            "FREQ=YEARLY;INTERVAL=101",
            None,
            "less often than once in 100 years",
            id="interval-101y",
        ),
        pytest.param(
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;INTERVAL=4",
            utc(2001, 1, 1),
            "never fires",  # 2001 + 4k is never a leap year
            id="leap-day-never-on-the-grid",
        ),
        pytest.param(
            "FREQ=DAILY",
            utc(9997, 12, 31, 12),
            "less often than once in 100 years",
            id="start-at-the-end-of-time",
        ),
    ],
)
def test_rrule_rejected(rule: str, start: datetime | None, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        check_spec(RRule(rule), UTC_ZONE, "r", start)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("rule", "start", "first"),
    [
        pytest.param(
            "FREQ=HOURLY;BYHOUR=10,20;INTERVAL=3",
            START_0115,
            utc(2026, 1, 1, 10, 15, 20),
            id="hourly-grid-from-start-reaches-byhour",  # was refused: judged from 1970-01-01 00:00
        ),
        pytest.param(
            "FREQ=DAILY;INTERVAL=7;BYDAY=MO;BYHOUR=23;BYMONTH=6,9",
            MONDAY_23,
            MONDAY_23,
            id="every-7-days-from-a-monday",  # was refused: 1970-01-01 is a Thursday
        ),
        pytest.param("FREQ=YEARLY;INTERVAL=100", None, utc(1970, 1, 1), id="interval-100y"),
        pytest.param("FREQ=DAILY;COUNT=1", START_0115, START_0115, id="count-1"),
        pytest.param("FREQ=MONTHLY;UNTIL=20260101", None, utc(1970, 1, 1), id="until-a-date"),
    ],
)
def test_rrule_accepted_from_its_start(rule: str, start: datetime | None, first: datetime) -> None:
    check_spec(RRule(rule), UTC_ZONE, "r", start)
    assert (
        next_after(sched(RRule(rule), start=start), (start or EPOCH) - timedelta(seconds=1))
        == first
    )


# COUNT counts wall occurrences from DTSTART (a wall time DST skips uses one up); UNTIL is
# inclusive, local wall time unless written with Z.
COUNT_UNTIL = [
    pytest.param(
        "FREQ=DAILY;BYHOUR=2;BYMINUTE=30;COUNT=3",
        NY,
        datetime(2026, 3, 7, tzinfo=NY),
        ["03-07 02:30:00-0500", "03-08 03:00:00-0400", "03-09 02:30:00-0400"],
        id="count-fixed-gap-wall-fires-after-the-gap",
    ),
    pytest.param(
        "FREQ=MINUTELY;INTERVAL=30;COUNT=4",
        NY,
        datetime(2026, 3, 8, 1, tzinfo=NY),
        ["03-08 01:00:00-0500", "03-08 01:30:00-0500"],
        id="count-frequent-skipped-walls-use-their-count",
    ),
    pytest.param(
        "FREQ=HOURLY;COUNT=2",
        NY,
        datetime(2026, 11, 1, tzinfo=NY),
        ["11-01 00:00:00-0400", "11-01 01:00:00-0400", "11-01 01:00:00-0500"],
        id="count-frequent-repeated-wall-counts-once-fires-twice",
    ),
    pytest.param(
        "FREQ=DAILY;BYHOUR=9;UNTIL=20260104T090000",
        BERLIN,
        datetime(2026, 1, 1, tzinfo=BERLIN),
        [
            "01-01 09:00:00+0100",
            "01-02 09:00:00+0100",
            "01-03 09:00:00+0100",
            "01-04 09:00:00+0100",
        ],
        id="until-local-wall-inclusive",
    ),
    pytest.param(
        "FREQ=DAILY;BYHOUR=9;UNTIL=20260103T080000Z",
        BERLIN,
        datetime(2026, 1, 1, tzinfo=BERLIN),
        ["01-01 09:00:00+0100", "01-02 09:00:00+0100", "01-03 09:00:00+0100"],
        id="until-z-is-a-utc-instant-inclusive",
    ),
    pytest.param(
        "FREQ=DAILY;BYHOUR=9;UNTIL=20260103T075959Z",
        BERLIN,
        datetime(2026, 1, 1, tzinfo=BERLIN),
        ["01-01 09:00:00+0100", "01-02 09:00:00+0100"],
        id="until-z-a-second-before",
    ),
    pytest.param(
        "FREQ=DAILY;BYHOUR=23;UNTIL=20260102",
        BERLIN,
        datetime(2026, 1, 1, tzinfo=BERLIN),
        ["01-01 23:00:00+0100", "01-02 23:00:00+0100"],
        id="until-a-date-is-its-whole-day",
    ),
    pytest.param(
        "FREQ=HOURLY;UNTIL=20261101T010000",
        NY,
        datetime(2026, 11, 1, tzinfo=NY),
        ["11-01 00:00:00-0400", "11-01 01:00:00-0400", "11-01 01:00:00-0500"],
        id="until-local-wall-in-the-repeated-hour-keeps-both",
    ),
]


@pytest.mark.parametrize(("rule", "zone", "start", "expected"), COUNT_UNTIL)
def test_rrule_count_and_until(
    rule: str, zone: ZoneInfo, start: datetime, expected: list[str]
) -> None:
    schedule = sched(RRule(rule), zone, start=start.astimezone(UTC))
    window = (start - timedelta(days=1), start + timedelta(days=30))
    assert local_times(schedule, *window) == expected
    last = fires_between(schedule, *window)
    assert latest_at_or_before(schedule, window[1], EPOCH) == list(last)[-1]


# -- once, bounds ----------------------------------------------------------------


def test_once() -> None:
    once = sched(Once(utc(2026, 12, 1, 8)))
    assert next_after(once, utc(2026, 1, 1)) == utc(2026, 12, 1, 8)
    assert next_after(once, utc(2026, 12, 1, 8)) is None
    assert list(fires_between(once, utc(2026, 1, 1), utc(2027, 1, 1))) == [utc(2026, 12, 1, 8)]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(Cron("0 * * * *"), id="cron"),
        pytest.param(Every(timedelta(hours=1)), id="interval"),
        pytest.param(RRule("FREQ=HOURLY"), id="rrule"),
    ],
)
def test_start_and_end_are_inclusive_bounds(spec: Spec) -> None:
    bounded = sched(spec, start=utc(2026, 1, 1, 10), end=utc(2026, 1, 1, 13))
    assert local_times(bounded, utc(2025, 1, 1), utc(2027, 1, 1)) == [
        "01-01 10:00:00+0000",
        "01-01 11:00:00+0000",
        "01-01 12:00:00+0000",
        "01-01 13:00:00+0000",
    ]
    assert next_after(bounded, utc(2026, 1, 1, 13)) is None
    assert latest_at_or_before(bounded, utc(2027, 1, 1), EPOCH) == utc(2026, 1, 1, 13)
    assert latest_at_or_before(bounded, utc(2026, 1, 1, 9), EPOCH) is None


def test_once_outside_bounds_never_fires() -> None:
    once = sched(Once(utc(2026, 12, 1, 8)), end=utc(2026, 11, 1))
    assert next_after(once, utc(2026, 1, 1)) is None


# -- latest_at_or_before ---------------------------------------------------------


class CountingSource:
    def __init__(self, inner: CronSource) -> None:
        self.inner = inner
        self.frequent = inner.frequent
        self.calls = 0

    def next_wall(self, lo: datetime) -> datetime | None:
        self.calls += 1
        return self.inner.next_wall(lo)


def test_latest_over_a_year_of_per_second_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    import beatd.timing as timing

    counter = CountingSource(compile_cron("* * * * * *", "s"))
    monkeypatch.setattr(timing, "compile_cron", lambda expr, name: counter)
    every_second = sched("* * * * * *", NY)
    instant = utc(2026, 11, 1, 6, 30, 15, 500)
    assert latest_at_or_before(every_second, instant, utc(2025, 11, 1)) == utc(
        2026, 11, 1, 6, 30, 15
    )
    assert counter.calls < 40


@pytest.mark.parametrize(
    ("expr", "zone", "instant", "expected"),
    [
        pytest.param("0 0 1 1 *", NY, utc(2026, 6, 1), utc(2026, 1, 1, 5), id="yearly-months-back"),
        pytest.param("30 2 * * *", NY, utc(2026, 3, 8, 12), utc(2026, 3, 8, 7), id="gap-fire"),
        pytest.param("*/20 * * * *", NY, utc(2026, 11, 1, 6, 5), utc(2026, 11, 1, 6), id="0100b"),
        pytest.param("0 0 29 2 *", UTC_ZONE, utc(2031, 1, 1), utc(2028, 2, 29), id="leap-day"),
        pytest.param("* * * * * *", NY, utc(2026, 1, 1), utc(2026, 1, 1), id="exactly-at-instant"),
    ],
)
def test_latest_at_or_before(
    expr: str, zone: ZoneInfo, instant: datetime, expected: datetime
) -> None:
    schedule = sched(expr, zone)
    found = latest_at_or_before(schedule, instant, utc(2000, 1, 1))
    assert found == expected
    walked = list(fires_between(schedule, expected - timedelta(days=2), instant))
    assert walked and walked[-1] == found


def test_latest_respects_not_before() -> None:
    yearly = sched("0 0 1 1 *")
    assert latest_at_or_before(yearly, utc(2026, 6, 1), utc(2026, 1, 1)) == utc(2026, 1, 1)
    assert latest_at_or_before(yearly, utc(2026, 6, 1), utc(2026, 1, 1, 0, 0, 1)) is None


def test_latest_interval_and_once() -> None:
    every = sched(Every(timedelta(minutes=5)))
    assert latest_at_or_before(every, utc(2026, 1, 1, 10, 4, 59), EPOCH) == utc(2026, 1, 1, 10)
    assert latest_at_or_before(every, utc(2026, 1, 1, 10, 4), utc(2026, 1, 1, 10, 1)) is None
    once = sched(Once(utc(2026, 1, 1)))
    assert latest_at_or_before(once, utc(2026, 2, 1), EPOCH) == utc(2026, 1, 1)
    assert latest_at_or_before(once, utc(2025, 2, 1), EPOCH) is None


# -- check_spec ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        pytest.param("0 0 30 2 *", "never fires", id="feb-30"),
        pytest.param("0 0 31 4,6,9,11 *", "never fires", id="31st-of-short-months"),
        pytest.param("0 0 * *", "5 fields", id="four-fields"),
        pytest.param("0 0 0 * * * 2026", "5 fields", id="seven-fields"),
        pytest.param("61 * * * *", "invalid cron", id="minute-out-of-range"),
        pytest.param("0 0 * * FOO", "invalid cron", id="bad-name"),
        pytest.param("R * * * *", "random", id="random-R"),
        pytest.param("@reboot", "macro", id="unknown-macro"),
        pytest.param("*/0 * * * *", "invalid cron", id="zero-step"),
        pytest.param(
            "0 25 * * *", "'0 25 \\* \\* \\*': hour: 25 is out of range 0-23", id="hour-25"
        ),
        pytest.param(
            "61 0 9 * * MON", "'61 0 9 \\* \\* MON': second: 61", id="six-fields-quoted-as-written"
        ),
        pytest.param("0 0 * * 0#6", "day of week: '0#6' is not valid", id="nth-6"),
        pytest.param("0 0 40W * *", "day of month: 40 is out of range", id="W-40"),
        pytest.param("0 22-2/3 * * *", "hour: '22-2/3' wraps around", id="wrap-with-step"),
        pytest.param(
            "0 0 * FOO *", "month: 'FOO' is not a number or a month name", id="month-name"
        ),
    ],
)
def test_check_spec_rejects_cron(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        check_spec(Cron(expr), UTC_ZONE, "job")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "expr",
    [
        "0 0 29 2 *",
        "0 0 31 2 MON",
        "H H H * *",
        "@daily",
        "0 0 L * *",
        "0 0 * * 5#5",
        "0 0 0 * * *",
    ],
)
def test_check_spec_accepts_cron(expr: str) -> None:
    check_spec(Cron(expr), NY, "job")


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18",
        "RRULE:FREQ=DAILY",
        "FREQ=SECONDLY;BYSETPOS=-1",
        "FREQ=HOURLY;BYSETPOS=2;BYMINUTE=0,30",
        "FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=29",
        "FREQ=YEARLY;BYEASTER=0",
    ],
)
def test_check_spec_accepts_rrule(rule: str) -> None:
    check_spec(RRule(rule), BERLIN, "r")


def test_check_spec_other_kinds() -> None:
    check_spec(Every(timedelta(seconds=1)), UTC_ZONE, "e")
    check_spec(Once(utc(2026, 1, 1)), UTC_ZONE, "o")
    with pytest.raises(ValueError, match="whole number of seconds"):
        check_spec(Every(timedelta(0)), UTC_ZONE, "e")
    with pytest.raises(ValueError, match="naive"):
        check_spec(Once(datetime(2026, 1, 1)), UTC_ZONE, "o")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        next_after(sched("* * * * *"), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        jitter_offset("a", datetime(2026, 1, 1), timedelta(seconds=1))


def test_results_are_aware_utc() -> None:
    found = next_after(sched("0 9 * * *", BERLIN), datetime(2026, 6, 1, 12, tzinfo=BERLIN))
    assert found == utc(2026, 6, 2, 7)
    assert found is not None and found.tzinfo is UTC


# -- jitter ----------------------------------------------------------------------


def test_jitter_is_deterministic_and_in_range() -> None:
    jitter = timedelta(seconds=10)
    # a fixed value: the same on every machine and in every process
    assert jitter_offset("a", utc(2026, 1, 1), jitter) == timedelta(milliseconds=520)
    instants = [utc(2026, 1, 1) + timedelta(minutes=i) for i in range(500)]
    offsets = [jitter_offset("nightly", at, jitter) for at in instants]
    assert all(timedelta(0) <= o < jitter for o in offsets)
    assert all(o % timedelta(milliseconds=1) == timedelta(0) for o in offsets)
    assert len(set(offsets)) > 400
    assert offsets == [jitter_offset("nightly", at, jitter) for at in instants]
    assert offsets != [jitter_offset("other", at, jitter) for at in instants]
    same_instant = datetime(2026, 1, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    assert jitter_offset("a", same_instant, jitter) == jitter_offset("a", utc(2026, 1, 1), jitter)


@pytest.mark.parametrize(
    "jitter", [timedelta(0), timedelta(microseconds=999), timedelta(seconds=-5)]
)
def test_no_jitter(jitter: timedelta) -> None:
    assert jitter_offset("a", utc(2026, 1, 1), jitter) == timedelta(0)


# -- describe --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        pytest.param(Cron("*/5 * * * *"), "Every 5 minutes", id="cron"),
        pytest.param(Cron("0 9 * * MON-FRI"), "At 09:00, Monday through Friday", id="cron-days"),
        pytest.param(Cron("H H * * *"), "H H * * *", id="cron-unwordable-falls-back"),
        pytest.param(Every(timedelta(hours=1, minutes=30)), "every 1h30m", id="interval"),
        pytest.param(RRule("FREQ=DAILY"), "RRULE FREQ=DAILY", id="rrule"),
        pytest.param(Once(utc(2026, 12, 1, 8)), "once at 2026-12-01T08:00:00+00:00", id="once"),
    ],
)
def test_describe(spec: Spec, text: str) -> None:
    assert describe(spec) == text
