"""The pure merge behind `beatd upcoming`: order, bounds, filters, laziness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from beatd import timing
from beatd.errors import ConfigError, NotFound
from beatd.model import Cron, Every, Fire, Once, RRule, Schedule
from beatd.upcoming import upcoming

NOW = datetime(2026, 6, 1, 12, 0, 7, tzinfo=UTC)


def every(name: str, seconds: int, **options: Any) -> Schedule:
    return Schedule(name=name, spec=Every(timedelta(seconds=seconds)), task="t", **options)


def once(name: str, at: datetime, **options: Any) -> Schedule:
    return Schedule(name=name, spec=Once(at), task="t", **options)


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 6, 1, hh, mm, ss, tzinfo=UTC)


def pairs(fires: list[Fire]) -> list[tuple[str, datetime]]:
    return [(f.schedule, f.at) for f in fires]


def test_merged_by_instant_then_name() -> None:
    schedules = [every("b", 300), every("c", 600), every("a", 300)]
    assert pairs(upcoming(schedules, NOW, limit=7)) == [
        ("a", at(12, 5)),
        ("b", at(12, 5)),
        ("a", at(12, 10)),
        ("b", at(12, 10)),
        ("c", at(12, 10)),
        ("a", at(12, 15)),
        ("b", at(12, 15)),
    ]


def test_after_is_exclusive() -> None:
    fires = upcoming([every("a", 300)], NOW, limit=2, after=at(12, 5))
    assert pairs(fires) == [("a", at(12, 10)), ("a", at(12, 15))]


def test_after_defaults_to_now() -> None:
    fires = upcoming([every("a", 60)], at(12, 1), limit=1)
    assert pairs(fires) == [("a", at(12, 2))]


def test_until_is_inclusive() -> None:
    fires = upcoming([every("a", 300), every("b", 600)], NOW, limit=100, until=at(12, 10))
    assert pairs(fires) == [("a", at(12, 5)), ("a", at(12, 10)), ("b", at(12, 10))]


def test_until_before_first_fire_gives_nothing() -> None:
    assert upcoming([every("a", 300)], NOW, limit=5, until=at(12, 1)) == []


def test_limit() -> None:
    assert len(upcoming([every("a", 1), every("b", 1)], NOW, limit=5)) == 5
    assert upcoming([every("a", 1)], NOW, limit=0) == []


@pytest.mark.parametrize("limit", [-1, 100_001])
def test_a_limit_out_of_bounds_is_refused(limit: int) -> None:
    with pytest.raises(ConfigError, match="limit: must be from 0 to 100000"):
        upcoming([every("a", 1)], NOW, limit=limit)


@pytest.mark.parametrize("which", ["now", "after", "until"])
def test_naive_instants_are_refused(which: str) -> None:
    naive = datetime(2026, 6, 1)
    kwargs: dict[str, Any] = {"now": NOW}
    kwargs[which] = naive
    with pytest.raises(ConfigError, match="needs a time zone"):
        upcoming([every("a", 1)], limit=1, **kwargs)


def test_disabled_schedules_are_left_out() -> None:
    fires = upcoming([every("a", 300, enabled=False), every("b", 600)], NOW, limit=2)
    assert [f.schedule for f in fires] == ["b", "b"]


def test_filter_by_schedule() -> None:
    fires = upcoming([every("a", 300), every("b", 600)], NOW, limit=3, schedule="b")
    assert pairs(fires) == [("b", at(12, 10)), ("b", at(12, 20)), ("b", at(12, 30))]


def test_unknown_schedule_is_not_found() -> None:
    with pytest.raises(NotFound, match="no schedule named 'zz'"):
        upcoming([every("a", 300)], NOW, limit=3, schedule="zz")


def test_once_schedules_end() -> None:
    schedules = [once("past", at(11, 0)), once("soon", at(12, 30)), every("a", 3600)]
    assert pairs(upcoming(schedules, NOW, limit=4)) == [
        ("soon", at(12, 30)),
        ("a", at(13, 0)),
        ("a", at(14, 0)),
        ("a", at(15, 0)),
    ]


def test_end_bound_is_honoured() -> None:
    fires = upcoming([every("a", 300, end=at(12, 10))], NOW, limit=10)
    assert pairs(fires) == [("a", at(12, 5)), ("a", at(12, 10))]


def test_local_is_in_the_schedule_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    (fire,) = upcoming([every("a", 300, timezone=berlin)], NOW, limit=1)
    assert fire.local == at(12, 5)
    assert fire.local.tzinfo == berlin
    assert fire.local.isoformat() == "2026-06-01T14:05:00+02:00"


def test_start_at_begins_at_the_stored_instant() -> None:
    schedules = [every("a", 300), every("b", 300), every("done", 300)]
    stored = {"a": at(12, 20), "b": at(11, 0), "done": None}
    fires = upcoming(schedules, NOW, limit=4, start_at=lambda s: stored[s.name])
    assert pairs(fires) == [
        ("b", at(12, 5)),
        ("b", at(12, 10)),
        ("b", at(12, 15)),
        ("a", at(12, 20)),
    ]


def test_merge_is_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    """One first instant per schedule, then one more per listed fire: never more."""
    calls = 0
    real = timing.next_after

    def counting(schedule: Schedule, after: datetime) -> datetime | None:
        nonlocal calls
        calls += 1
        return real(schedule, after)

    monkeypatch.setattr(timing, "next_after", counting)
    schedules = [every(f"s{i:04}", 60 + i) for i in range(500)]
    fires = upcoming(schedules, NOW, limit=50)
    assert len(fires) == 50
    assert calls <= 500 + 50


def test_schedules_sharing_a_timing_share_its_instants(monkeypatch: pytest.MonkeyPatch) -> None:
    """100,000 schedules cost their distinct timings: one rrule walk, not one per schedule.

    An H in a cron hashes the name, so those are never shared.
    """
    calls: list[str] = []
    real = timing.next_after

    def counting(schedule: Schedule, after: datetime) -> datetime | None:
        calls.append(schedule.name)
        return real(schedule, after)

    monkeypatch.setattr(timing, "next_after", counting)
    berlin = ZoneInfo("Europe/Berlin")
    rule = RRule("FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=18")
    shared = [Schedule(f"r{i:04}", rule, "t", timezone=berlin) for i in range(500)]
    hashed = [Schedule(f"h{i}", Cron("H * * * *"), "t") for i in range(3)]
    fires = upcoming([*shared, *hashed], NOW, limit=520)
    # the rrule's first instant, and the one after it (asked as each of the 500 is listed)
    assert sum(name.startswith("r") for name in calls) == 2
    first = real(shared[0], NOW)
    assert [f.at for f in fires if f.schedule.startswith("r")] == [first] * 500
    minutes = {f.at.minute for f in fires if f.schedule.startswith("h")}
    assert len(minutes) == 3  # each H schedule kept its own minute


def test_the_file_s_views_share_work_between_schedules_of_one_timing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`list` and `upcoming` show each file schedule's next fire: one rrule walk for all 500."""
    from beatd import views

    calls: list[str] = []
    real = timing.next_after

    def counting(schedule: Schedule, after: datetime) -> datetime | None:
        calls.append(schedule.name)
        return real(schedule, after)

    monkeypatch.setattr(timing, "next_after", counting)
    rule = RRule("FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=18")
    shared = [
        Schedule(f"r{i:04}", rule, "t", timezone=ZoneInfo("Europe/Berlin")) for i in range(500)
    ]
    shown = views.merged(shared, None, NOW)
    assert len(calls) == 1
    assert {v.info.next_at for v in shown} == {real(shared[0], NOW)}
