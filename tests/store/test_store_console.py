"""What the web console reads: a filtered page of schedules, recent fire lags (every backend)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from store_helpers import sched

from beatd.ids import fire_id
from beatd.model import Decision, Outcome, ScheduleFilter
from beatd.store.base import Store

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def page_names(store: Store, where: ScheduleFilter, offset: int = 0, limit: int = 50) -> list[str]:
    return [s.schedule.name for s in store.page(where, offset, limit).schedules]


@pytest.fixture
def states(store: Store) -> Store:
    """One schedule in each state, two of them from the file."""
    store.load_file([sched("file-active"), sched("file-paused")], lambda _s: T0)
    store.put(sched("api-active"), T0, replace=False)
    store.put(sched("api-disabled", enabled=False), T0, replace=False)
    store.put(sched("api-finished"), None, replace=False)
    store.set_paused("file-paused", True, "maintenance", None)
    return store


def test_pages_by_name_and_counts_every_match(store: Store) -> None:
    for i in range(25):
        store.put(sched(f"job-{i:02d}"), T0, replace=False)
    first = store.page(ScheduleFilter(), 0, 10)
    assert [s.schedule.name for s in first.schedules] == [f"job-{i:02d}" for i in range(10)]
    assert first.total == 25
    assert page_names(store, ScheduleFilter(), 20, 10) == [f"job-{i:02d}" for i in range(20, 25)]
    assert page_names(store, ScheduleFilter(), 30, 10) == []


def test_text_matches_a_part_of_the_name_in_either_case(store: Store) -> None:
    for name in ("Nightly-Report", "hourly-report", "ping", "100%_done", "100x-done"):
        store.put(sched(name), T0, replace=False)
    assert page_names(store, ScheduleFilter(text="REPORT")) == ["Nightly-Report", "hourly-report"]
    assert page_names(store, ScheduleFilter(text="ly-r")) == ["Nightly-Report", "hourly-report"]
    # LIKE's wildcards in the text are literal characters
    assert page_names(store, ScheduleFilter(text="0%_")) == ["100%_done"]
    assert store.page(ScheduleFilter(text="nothing"), 0, 10).total == 0


def test_only_ascii_letters_match_in_either_case_on_every_backend(store: Store) -> None:
    for name in ("Ärger-report", "ärger-log", "STRASSE", "straße"):
        store.put(sched(name), T0, replace=False)
    assert page_names(store, ScheduleFilter(text="ÄRGER")) == ["Ärger-report"]
    assert page_names(store, ScheduleFilter(text="rger")) == ["Ärger-report", "ärger-log"]
    assert page_names(store, ScheduleFilter(text="strasse")) == ["STRASSE"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("active", ["api-active", "file-active"]),
        ("paused", ["file-paused"]),
        ("disabled", ["api-disabled"]),
        ("finished", ["api-finished"]),
        ("gone", []),
    ],
)
def test_state_filter_agrees_with_the_state_each_schedule_shows(
    states: Store, state: str, expected: list[str]
) -> None:
    page = states.page(ScheduleFilter(state=state), 0, 50)
    assert [s.schedule.name for s in page.schedules] == expected
    assert {s.state for s in page.schedules} <= {state}
    assert page.total == len(expected)


def test_source_filter_combines_with_text_and_state(states: Store) -> None:
    assert page_names(states, ScheduleFilter(source="file")) == ["file-active", "file-paused"]
    assert page_names(states, ScheduleFilter(source="api", state="active")) == ["api-active"]
    assert page_names(states, ScheduleFilter(text="paused", source="api")) == []
    paused = states.page(ScheduleFilter(state="paused"), 0, 1).schedules[0]
    assert paused.note == "maintenance"


def test_last_is_the_newest_history_row_of_each_listed_schedule(store: Store) -> None:
    for name in ("a", "b", "c"):
        store.put(sched(name), T0, replace=False)

    def fire(name: str, minutes: int, outcome: Outcome) -> Decision:
        at = T0 + timedelta(minutes=minutes)
        reason = "grace" if outcome is Outcome.DROPPED else None
        return Decision(name, at, fire_id(name, at), outcome, reason=reason)

    store.record(
        None,
        [
            fire("a", 1, Outcome.DROPPED),
            fire("a", 3, Outcome.DROPPED),
            fire("a", 2, Outcome.DROPPED),
            fire("c", 5, Outcome.DROPPED),
        ],
        [],
    )
    page = store.page(ScheduleFilter(), 0, 2)
    assert set(page.last) == {"a"}  # b has no history, c is not on this page
    assert page.last["a"].scheduled_for == T0 + timedelta(minutes=3)
    assert page.last["a"].outcome is Outcome.DROPPED
    assert page.last["a"].reason == "grace"


def test_lags_are_of_fires_sent_on_schedule_newest_first(store: Store) -> None:
    store.put(sched("a"), T0, replace=False)

    def fire(minutes: int, manual: bool = False, reason: str | None = None) -> Decision:
        at = T0 + timedelta(minutes=minutes)
        return Decision("a", at, fire_id("a", at), Outcome.PENDING, reason=reason, manual=manual)

    trigger, backfill = fire(4, manual=True), fire(5, reason="backfill")
    store.record(None, [fire(1), fire(2), fire(3), trigger, backfill, fire(6)], [])
    late = {1: 0.25, 2: 0.5, 3: 1.5, 4: 9.0, 5: 99.0}  # instant 6 stays unsent
    for minutes, seconds in late.items():
        at = T0 + timedelta(minutes=minutes)
        store.mark_sent([fire_id("a", at)], at + timedelta(seconds=seconds))
    assert store.lags(10) == pytest.approx([1.5, 0.5, 0.25], abs=0.002)
    assert store.lags(2) == pytest.approx([1.5, 0.5], abs=0.002)
