"""What the pages compute: DST changes on a fire timeline, the lag histogram (pure tables)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from beatd.codec import OPTIONS
from beatd.model import Cron, Schedule
from beatd.upcoming import upcoming
from beatd.web.forms import FIELDS
from beatd.web.views import lag_chart, percentile, timeline


def fires_of(
    expr: str, zone: str, now: datetime, limit: int = 4
) -> list[tuple[str, str, str | None]]:
    schedule = Schedule(name="s", spec=Cron(expr), task="t", timezone=ZoneInfo(zone))
    rows = timeline(upcoming([schedule], now, limit=limit), schedule.timezone, now)
    return [(r.local.isoformat(), r.utc.strftime("%H:%MZ"), r.change) for r in rows]


FORWARD = "clocks go forward 1 h before this fire: CET (UTC+01:00) → CEST (UTC+02:00)"
BACK = "clocks go back 1 h before this fire: CEST (UTC+02:00) → CET (UTC+01:00)"


@pytest.mark.parametrize(
    ("expr", "zone", "now", "expected"),
    [
        pytest.param(
            "30 2 * * *", "Europe/Berlin", datetime(2026, 3, 27, 12, tzinfo=UTC),
            [
                ("2026-03-28T02:30:00+01:00", "01:30Z", None),
                # 02:30 does not exist on the 29th: a fixed job fires once, right after the gap
                ("2026-03-29T03:00:00+02:00", "01:00Z", FORWARD),
                ("2026-03-30T02:30:00+02:00", "00:30Z", None),
            ],
            id="spring-forward-fixed-job-in-the-gap",
        ),
        pytest.param(
            "0 12 * * *", "Europe/Berlin", datetime(2026, 10, 24, 13, tzinfo=UTC),
            [
                ("2026-10-25T12:00:00+01:00", "11:00Z", BACK),
                ("2026-10-26T12:00:00+01:00", "11:00Z", None),
            ],
            id="fall-back-marked-on-the-first-fire-after",
        ),
        pytest.param(
            "0 12 * * *", "Australia/Lord_Howe", datetime(2026, 10, 3, 12, tzinfo=UTC),
            [
                ("2026-10-04T12:00:00+11:00", "01:00Z",
                 "clocks go forward 30 min before this fire: +1030 (UTC+10:30) → +11 (UTC+11:00)"),
                ("2026-10-05T12:00:00+11:00", "01:00Z", None),
            ],
            id="half-hour-shift",
        ),
        pytest.param(
            "0 12 * * *", "UTC", datetime(2026, 3, 28, 13, tzinfo=UTC),
            [
                ("2026-03-29T12:00:00+00:00", "12:00Z", None),
                ("2026-03-30T12:00:00+00:00", "12:00Z", None),
            ],
            id="utc-never-changes",
        ),
    ],
)  # fmt: skip
def test_timeline_marks_each_dst_change_before_the_first_fire_after_it(
    expr: str, zone: str, now: datetime, expected: list[tuple[str, str, str | None]]
) -> None:
    assert fires_of(expr, zone, now, len(expected)) == expected


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, 0.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 99, 4.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


def test_lag_chart_buckets_and_scales_bars() -> None:
    chart = lag_chart([0.004, 0.009, 0.030, 0.030, 0.030, 0.030, 7.5, -0.001])
    assert chart.count == 8
    assert [(b.label, b.count) for b in chart.bars] == [
        ("≤ 10 ms", 3), ("≤ 25 ms", 0), ("≤ 50 ms", 4), ("≤ 100 ms", 0), ("≤ 250 ms", 0),
        ("≤ 500 ms", 0), ("≤ 1 s", 0), ("≤ 2.5 s", 0), ("≤ 5 s", 0), ("> 5 s", 1),
    ]  # fmt: skip
    assert [b.height for b in chart.bars if b.count] == [60, 80, 20]  # the tallest is 80 px
    assert (chart.p50, chart.p99, chart.worst) == (30.0, 7500.0, 7500.0)
    assert lag_chart([]).count == 0


def test_the_form_has_a_field_for_every_option_of_a_schedule() -> None:
    assert {f.key for f in FIELDS} | {"enabled"} == set(OPTIONS)
