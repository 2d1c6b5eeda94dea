"""History retention, one contract over memory, SQLite and PostgreSQL: FireLog.prune."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from store_helpers import sched
from test_store_contract import dropped, pending

from beatd.ids import fire_id
from beatd.model import Decision, Outcome
from beatd.store.base import Store

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sent(store: Store, schedule: str, *minutes: float) -> None:
    store.record(None, [pending(schedule, at(m)) for m in minutes], [])
    store.mark_sent([fire_id(schedule, at(m)) for m in minutes], at(100))


def kept(store: Store, schedule: str | None = None) -> list[tuple[str, float]]:
    return sorted(
        (r.schedule, (r.scheduled_for - T0) / timedelta(minutes=1))
        for r in store.history(schedule, 1000)
    )


def test_prune_deletes_settled_rows_before_the_cut_off_oldest_first(store: Store) -> None:
    sent(store, "a", 1, 2, 4, 5)
    store.record(None, [dropped("b", at(3))], [])
    store.record(None, [pending("stuck", at(0))], [])  # never confirmed: still to send
    store.record(None, [pending("c", at(1.5))], [])
    store.mark_failed(fire_id("c", at(1.5)), "unroutable", at(2))

    assert store.prune(at(4), 2) == 2  # a batch: the two oldest settled rows
    assert kept(store) == [("a", 2), ("a", 4), ("a", 5), ("b", 3), ("stuck", 0)]
    assert store.prune(at(4), 10) == 2  # the rest before at(4): a at 2, b at 3
    assert kept(store) == [("a", 4), ("a", 5), ("stuck", 0)]
    assert store.prune(at(4), 10) == 0
    assert store.backlog() == 1  # the pending fire and its message stay
    lease = store.acquire("relay", timedelta(seconds=30), "relay")
    assert lease is not None
    assert [m.schedule for m in store.claim(lease, at(10), 10)] == ["stuck"]


def test_prune_keeps_the_newest_history_limit_rows_of_a_schedule(store: Store) -> None:
    store.put(sched("capped", history_limit=2), at(10), replace=False)
    store.put(sched("free"), at(10), replace=False)
    store.record(None, [pending("capped", at(0.5))], [])  # pending: never deleted
    sent(store, "capped", 1, 2, 3)
    store.record(None, [pending("capped", at(4))], [])
    sent(store, "free", 1, 2, 3)

    # Nothing is old enough by age; "capped" keeps its newest two (at 4 and at 3).
    assert store.prune(at(-60), 1) == 1
    assert store.prune(at(-60), 10) == 1
    assert kept(store, "capped") == [("capped", 0.5), ("capped", 3), ("capped", 4)]
    assert kept(store, "free") == [("free", 1), ("free", 2), ("free", 3)]
    assert store.prune(at(-60), 10) == 0


def test_prune_by_age_and_by_cap_share_one_batch(store: Store) -> None:
    store.put(sched("capped", history_limit=1), at(10), replace=False)
    sent(store, "old", 1, 2)
    sent(store, "capped", 5, 6, 7)
    assert store.prune(at(3), 3) == 3  # both expired rows, then one over the cap
    assert store.prune(at(3), 3) == 1
    assert kept(store) == [("capped", 7)]


def test_a_pruned_instant_is_not_recorded_again_by_the_tick_path(store: Store) -> None:
    """Pruning deletes history, not run state: next_at and the fire count stay."""
    store.put(sched("a"), at(3), replace=False)
    before = store.get("a")
    sent(store, "a", 1, 2)
    store.prune(at(10), 10)
    after = store.get("a")
    assert (after.next_at, after.last_at, after.fires) == (
        before.next_at,
        before.last_at,
        before.fires,
    )
    assert store.history("a", 10) == []


def test_prune_leaves_decisions_of_other_outcomes_alone_until_they_expire(store: Store) -> None:
    store.record(
        None,
        [Decision("m", at(1), fire_id("m", at(1)), Outcome.DROPPED, "coalesced", manual=True)],
        [],
    )
    assert store.prune(at(1), 10) == 0  # strictly before the cut-off
    assert store.prune(at(1.001), 10) == 1
