"""The planner's common case: everything due is on time, whatever the misfire policy or grace.

Most plans decide one on-time instant of an enabled schedule; plan() takes a
short path for them. These hold that path to the rules the policies share:
every on-time instant up to the horizon is sent, oldest first, under the id
of its fire; the schedule advances to the next instant; max_fires still cuts.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from beatd.ids import fire_id
from beatd.model import Cron, Every, Misfire, Outcome, Schedule, Spec, StoredSchedule
from beatd.planner import ON_TIME, plan
from beatd.publish.messages import build_message
from beatd.timing import fires_between, next_after

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)
SPECS: list[Spec] = [Every(timedelta(seconds=17)), Every(timedelta(seconds=1)), Cron("* * * * * *")]
LATENESS = [timedelta(0), 3 * MS, 999 * MS, ON_TIME]
HORIZONS = [None, 500 * MS, 2500 * MS]


def stored(schedule: Schedule, first: datetime, fires: int = 0) -> StoredSchedule:
    return StoredSchedule(schedule, first, None, fires, False, None, 4, T0 - timedelta(days=1))


@pytest.mark.parametrize("spec", SPECS, ids=["every-17s", "every-1s", "cron-every-second"])
@pytest.mark.parametrize("misfire", list(Misfire), ids=str)
@pytest.mark.parametrize("grace", [None, timedelta(seconds=30)], ids=["no-grace", "grace"])
def test_every_on_time_instant_up_to_the_horizon_is_sent(
    spec: Spec, misfire: Misfire, grace: timedelta | None
) -> None:
    schedule = Schedule("job", spec, "app.tasks.job", misfire=misfire, grace=grace)
    first = next_after(schedule, T0)
    assert first is not None
    for late, ahead, since in itertools.product(LATENESS, HORIZONS, [None, first - ON_TIME]):
        now = first + late
        horizon = None if ahead is None else now + ahead
        p = plan(stored(schedule, first), now, build_message, since=since, horizon=horizon)
        until = max(now, horizon or now)
        due = [first, *fires_between(schedule, first, until)]
        assert [d.scheduled_for for d in p.decisions] == due
        for d in p.decisions:
            assert d.outcome is Outcome.PENDING and d.message is not None
            assert d.fire_id == d.message.fire_id == fire_id("job", d.scheduled_for)
            assert d.message.scheduled_for == d.scheduled_for
        assert p.advance is not None
        assert p.advance.next_at == next_after(schedule, until)
        assert (p.advance.last_at, p.advance.fires_added) == (due[-1], len(due))
        assert p.advance.version == 4


def test_max_fires_still_cuts_the_on_time_run() -> None:
    schedule = Schedule("job", Every(timedelta(seconds=1)), "app.tasks.job", max_fires=3)
    p = plan(stored(schedule, T0, fires=1), T0 + 3 * MS, build_message, horizon=T0 + 5 * ON_TIME)
    assert [d.scheduled_for for d in p.decisions] == [T0, T0 + ON_TIME]
    assert p.advance is not None and p.advance.next_at is None
    assert (p.advance.last_at, p.advance.fires_added) == (T0 + ON_TIME, 2)


def test_an_on_time_instant_of_a_disabled_schedule_is_not_decided() -> None:
    schedule = Schedule("job", Every(timedelta(seconds=17)), "app.tasks.job", enabled=False)
    first = next_after(schedule, T0)
    assert first is not None
    p = plan(stored(schedule, first), first + 3 * MS, build_message)
    assert p.decisions == ()
    assert p.advance is not None and p.advance.next_at == first + timedelta(seconds=17)


def test_a_next_at_off_the_grid_with_no_instant_due_decides_nothing() -> None:
    schedule = Schedule("job", Every(timedelta(seconds=17)), "app.tasks.job")
    first = next_after(schedule, T0)
    assert first is not None
    off_grid = first + 5 * MS  # e.g. stored under an older definition
    p = plan(stored(schedule, off_grid), off_grid + 3 * MS, build_message)
    assert p.decisions == ()
    assert p.advance is not None and p.advance.next_at == first + timedelta(seconds=17)
