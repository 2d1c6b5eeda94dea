"""The planner as tables: (schedule, stored state, now) -> decisions and advance."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from beatd import timing
from beatd.errors import ScheduleError
from beatd.ids import fire_id
from beatd.model import Cron, Every, Message, Misfire, Once, Outcome, Schedule, StoredSchedule
from beatd.planner import CATCH_UP_CAP, ON_TIME, plan
from beatd.publish.messages import build_message

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def sched(every: int = 10, **options: Any) -> Schedule:
    spec = options.pop("spec", Every(timedelta(seconds=every)))
    return Schedule(name="job", spec=spec, task="app.tasks.job", **options)


def stored(
    schedule: Schedule, next_at: datetime | None = T0, fires: int = 0, created: float = -86400
) -> StoredSchedule:
    return StoredSchedule(schedule, next_at, None, fires, False, None, 7, at(created))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Case:
    id: str
    schedule: Schedule
    now: datetime
    sent: list[float]  # seconds after T0
    dropped: dict[float, str] = field(default_factory=dict)
    next_at: float | None = -1.0  # -1: not checked
    fires: int = 0
    next_at_start: datetime | None = T0
    since: float | None = None  # the leader's term began (seconds after T0)
    created: float = -86400  # the schedule was stored (seconds after T0)


CASES = [
    Case("on-time-exact", sched(), at(0), [0], next_at=10),
    Case("on-time-a-few-ms-late", sched(), at(0.005), [0], next_at=10),
    Case("on-time-at-tolerance", sched(misfire=Misfire.SKIP), at(1), [0], next_at=10),
    Case(
        "just-past-tolerance-is-missed",
        sched(misfire=Misfire.SKIP),
        at(1.001),
        [],
        {0: "missed (skip)"},
        next_at=10,
    ),
    Case("not-due-yet", sched(), at(-0.5), [], next_at=-1),
    Case(
        "coalesce-sends-latest",
        sched(),
        at(25),
        [20],
        {0: "coalesced", 10: "coalesced"},
        next_at=30,
    ),
    Case(
        "all-sends-each-oldest-first", sched(misfire=Misfire.ALL), at(25), [0, 10, 20], next_at=30
    ),
    Case(
        "skip-drops-missed",
        sched(misfire=Misfire.SKIP),
        at(25),
        [],
        {0: "missed (skip)", 10: "missed (skip)", 20: "missed (skip)"},
        next_at=30,
    ),
    Case(
        "skip-sends-the-on-time-one",
        sched(misfire=Misfire.SKIP),
        at(20.5),
        [20],
        {0: "missed (skip)", 10: "missed (skip)"},
        next_at=30,
    ),
    Case(
        "grace-drops-older-coalesces-rest",
        sched(grace=15 * S),
        at(25),
        [20],
        {0: "past grace", 10: "coalesced"},
        next_at=30,
    ),
    Case(
        "grace-all-past",
        sched(grace=2 * S),
        at(25),
        [],
        {0: "past grace", 10: "past grace", 20: "past grace"},
        next_at=30,
    ),
    Case(
        "grace-all-policy",
        sched(grace=15 * S, misfire=Misfire.ALL),
        at(25),
        [10, 20],
        {0: "past grace"},
        next_at=30,
    ),
    Case("grace-zero-on-time-still-sent", sched(grace=0 * S), at(0.5), [0], next_at=10),
    Case(
        "max-fires-cuts-all",
        sched(misfire=Misfire.ALL, max_fires=2),
        at(25),
        [0, 10],
        next_at=None,
    ),
    Case(
        "max-fires-counts-stored-fires",
        sched(misfire=Misfire.ALL, max_fires=3),
        at(25),
        [0],
        next_at=None,
        fires=2,
    ),
    Case(
        "max-fires-already-reached",
        sched(max_fires=2),
        at(25),
        [],
        next_at=None,
        fires=2,
    ),
    Case(
        "max-fires-coalesce",
        sched(max_fires=1),
        at(25),
        [20],
        {0: "coalesced", 10: "coalesced"},
        next_at=None,
    ),
    Case("disabled-fires-nothing", sched(enabled=False), at(25), [], next_at=30),
    Case("once-missed-coalesce-sends", sched(spec=Once(T0)), at(3600), [0], next_at=None),
    Case(
        "once-missed-skip-drops",
        sched(spec=Once(T0), misfire=Misfire.SKIP),
        at(3600),
        [],
        {0: "missed (skip)"},
        next_at=None,
    ),
    Case(
        "end-bound-finishes",
        sched(end=at(15)),
        at(100),
        [10],
        {0: "coalesced"},
        next_at=None,
    ),
    Case(
        "late-in-a-term-is-not-missed-coalesce",
        sched(),
        at(25),
        [0, 10, 20],
        since=-5,
        next_at=30,
    ),
    Case(
        "late-in-a-term-is-not-missed-skip",
        sched(misfire=Misfire.SKIP),
        at(25),
        [0, 10, 20],
        since=-5,
        next_at=30,
    ),
    Case(
        "late-in-a-term-ignores-grace",
        sched(grace=2 * S),
        at(25),
        [0, 10, 20],
        since=-5,
        next_at=30,
    ),
    Case(
        "missed-before-the-term-coalesced-into-on-time",
        sched(),
        at(25),
        [10, 20],
        {0: "coalesced"},
        since=5,
        next_at=30,
    ),
    Case(
        "missed-before-the-term-skip",
        sched(misfire=Misfire.SKIP),
        at(25),
        [10, 20],
        {0: "missed (skip)"},
        since=5,
        next_at=30,
    ),
    Case(
        "once-stored-after-its-instant-is-missed-in-any-term",
        sched(spec=Once(T0), misfire=Misfire.SKIP),
        at(3600),
        [],
        {0: "missed (skip)"},
        since=-86400 * 2,
        next_at=None,
        created=60,
    ),
    Case(
        "on-time-coalesce-keeps-two-on-time-instants",
        sched(1),
        at(3),
        [2, 3],
        {0: "coalesced", 1: "coalesced"},
        next_at=4,
    ),
    Case("finished-schedule", sched(), at(100), [], next_at=-1, next_at_start=None),
    Case(
        "cron-every-minute-coalesce",
        sched(spec=Cron("* * * * *")),
        at(180.2),
        [180],
        {0: "coalesced", 60: "coalesced", 120: "coalesced"},
        next_at=240,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_table(case: Case) -> None:
    since = None if case.since is None else at(case.since)
    p = plan(
        stored(case.schedule, case.next_at_start, case.fires, case.created),
        case.now,
        build_message,
        since=since,
    )
    sent = [d for d in p.decisions if d.outcome is Outcome.PENDING]
    dropped = {d.scheduled_for: d.reason for d in p.decisions if d.outcome is Outcome.DROPPED}
    assert [d.scheduled_for for d in sent] == [at(s) for s in case.sent]
    assert dropped == {at(s): r for s, r in case.dropped.items()}
    instants = [d.scheduled_for for d in p.decisions]
    assert instants == sorted(instants)
    for d in p.decisions:
        assert d.fire_id == fire_id("job", d.scheduled_for)
        assert (d.message is not None) == (d.outcome is Outcome.PENDING)
    if case.next_at == -1:
        if case.now < T0 or case.next_at_start is None:
            assert p.advance is None and not p.decisions
        return
    assert p.advance is not None
    assert p.advance.next_at == (None if case.next_at is None else at(case.next_at))
    assert p.advance.version == 7
    assert p.advance.fires_added == len(sent)
    if p.decisions:
        assert p.advance.last_at == p.decisions[-1].scheduled_for


def test_all_caps_a_catch_up_and_sends_the_on_time_one() -> None:
    p = plan(stored(sched(1, misfire=Misfire.ALL)), at(2000.5), build_message)
    sent = [d.scheduled_for for d in p.decisions if d.outcome is Outcome.PENDING]
    dropped = [d for d in p.decisions if d.outcome is Outcome.DROPPED]
    assert sent == [at(i) for i in range(CATCH_UP_CAP)] + [at(2000)]
    assert [d.scheduled_for for d in dropped] == [at(i) for i in range(1000, 2000)]
    assert {d.reason for d in dropped} == {"catch-up cap"}
    assert p.advance is not None and p.advance.next_at == at(2001)


YEAR = 365 * 86400


@pytest.mark.parametrize(
    ("misfire", "reason", "sends"),
    [(Misfire.COALESCE, "coalesced", 1), (Misfire.ALL, "catch-up cap", CATCH_UP_CAP + 1)],
    ids=["coalesce", "all"],
)
def test_a_year_outage_of_per_second_fires_is_one_summary(
    misfire: Misfire, reason: str, sends: int
) -> None:
    started = time.perf_counter()
    p = plan(stored(sched(1, misfire=misfire)), at(YEAR + 0.5), build_message)
    elapsed = time.perf_counter() - started
    dropped = [d for d in p.decisions if d.outcome is Outcome.DROPPED]
    assert p.sends == sends
    assert len(dropped) == 1
    first = at(0) if misfire is Misfire.COALESCE else at(CATCH_UP_CAP)
    count = YEAR - (0 if misfire is Misfire.COALESCE else CATCH_UP_CAP)
    assert dropped[0].scheduled_for == first
    assert dropped[0].reason == (
        f"{reason}: {count} instants from {first:%Y-%m-%dT%H:%M:%SZ} "
        f"to {at(YEAR - 1):%Y-%m-%dT%H:%M:%SZ}"
    )
    assert p.decisions[-1].scheduled_for == at(YEAR)
    assert p.advance is not None and p.advance.next_at == at(YEAR + 1)
    assert elapsed < 2.0


def test_a_long_cron_outage_is_bounded() -> None:
    schedule = sched(spec=Cron("* * * * * *"))
    started = time.perf_counter()
    p = plan(stored(schedule), at(7 * 86400 + 0.5), build_message)
    assert time.perf_counter() - started < 3.0
    assert len(p.decisions) == 2
    assert p.decisions[0].reason is not None
    assert p.decisions[0].reason.startswith("coalesced: more than 1000 instants from")
    assert p.decisions[1].outcome is Outcome.PENDING


def test_jitter_delays_the_publish_not_the_instant() -> None:
    schedule = sched(jitter=5 * S)
    p = plan(stored(schedule), at(0), build_message)
    (decision,) = p.decisions
    assert decision.message is not None
    assert decision.scheduled_for == T0
    offset = timing.jitter_offset("job", T0, 5 * S)
    assert decision.message.publish_at == T0 + offset
    assert timedelta(0) <= offset < 5 * S
    assert decision.message.fire_id == fire_id("job", T0)


def test_a_message_that_cannot_be_built_is_dropped_not_fatal() -> None:
    def broken(schedule: Schedule, instant: datetime, publish_at: datetime) -> Message:
        raise ScheduleError("job", "args", "not JSON")

    p = plan(stored(sched()), at(0), broken)
    (decision,) = p.decisions
    assert decision.outcome is Outcome.DROPPED
    assert decision.reason is not None and "cannot build the message" in decision.reason
    assert p.advance is not None and p.advance.fires_added == 0


def test_on_time_tolerance_is_a_second() -> None:
    assert ON_TIME == S


def test_a_horizon_decides_ahead_and_lateness_is_still_measured_at_now() -> None:
    p = plan(stored(sched(10), at(10)), at(9.6), build_message, horizon=at(10.1))
    (decision,) = p.decisions
    assert decision.scheduled_for == at(10) and decision.outcome is Outcome.PENDING
    assert decision.message is not None and decision.message.publish_at == at(10)
    assert p.advance is not None and p.advance.next_at == at(20)
    # nothing due by the horizon: not due at all
    assert plan(stored(sched(10), at(10)), at(9.0), build_message, horizon=at(9.5)).advance is None
    # skip: an instant 2 s late is missed even though the horizon is ahead
    late = plan(stored(sched(10, misfire=Misfire.SKIP)), at(2), build_message, horizon=at(2.5))
    assert [d.reason for d in late.decisions] == ["missed (skip)"]
