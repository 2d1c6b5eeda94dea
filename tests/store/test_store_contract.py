"""One contract, three backends: memory, SQLite, PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from store_helpers import Backend, message, pending, sched

from beatd.errors import ConfigError, Conflict, Fenced, NotFound
from beatd.ids import fire_id
from beatd.model import (
    Advance,
    Cron,
    Decision,
    Format,
    Lease,
    Message,
    Misfire,
    Outcome,
    Schedule,
    Source,
)
from beatd.store.base import Store

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def claimed(store: Store, through: datetime, limit: int = 100) -> list[Message]:
    """What a relay would take by `through`, claiming under its own lease."""
    lease = store.current()
    if lease is None or lease.token != "relay":
        lease = store.acquire("relay", timedelta(seconds=30), "relay")
    assert lease is not None
    return store.claim(lease, through, limit)


def dropped(schedule: str, when: datetime) -> Decision:
    return Decision(schedule, when, fire_id(schedule, when), Outcome.DROPPED, reason="grace")


def next_at_fixed(when: datetime | None) -> object:
    return lambda _schedule: when


def names(items: Sequence[object]) -> list[str]:
    return [getattr(getattr(i, "schedule", i), "name", None) or str(i) for i in items]


# -- definitions ---------------------------------------------------------------


def test_put_get_round_trips_every_option(store: Store) -> None:
    full = Schedule(
        name="report",
        spec=Cron("30 2 * * MON-FRI"),
        task="reports.nightly",
        timezone=ZoneInfo("Europe/Berlin"),
        args=(1, "two"),
        kwargs={"full": True, "n": [1, 2]},
        queue="reports",
        exchange="ex",
        routing_key="rk",
        headers={"h": "v"},
        format=Format.JSON,
        start=at(0),
        end=at(60 * 24 * 365),
        jitter=timedelta(seconds=30),
        expires=timedelta(minutes=5),
        misfire=Misfire.ALL,
        grace=timedelta(hours=1),
        max_fires=10,
        enabled=False,
        priority=7,
    )
    store.put(full, at(5), replace=False)
    got = store.get("report")
    assert got.schedule == full
    assert got.schedule.source is Source.API
    assert (got.next_at, got.last_at, got.fires, got.paused) == (at(5), None, 0, False)
    assert got.version > 1  # a new incarnation's own: never one an earlier one had
    assert got.created_at.tzinfo is not None
    with pytest.raises(NotFound):
        store.get("nope")


def test_put_conflicts_and_replace(store: Store) -> None:
    store.put(sched("a"), at(1), replace=False)
    v = store.get("a").version
    with pytest.raises(Conflict, match="already exists"):
        store.put(sched("a", task="other"), at(2), replace=False)
    # options change: run state kept
    store.put(sched("a", queue="q2"), at(9), replace=True)
    got = store.get("a")
    assert (got.schedule.queue, got.next_at, got.version) == ("q2", at(1), v + 1)
    # timing change: next_at from the caller
    store.put(sched("a", every=120), at(2), replace=True)
    got = store.get("a")
    assert (got.next_at, got.version) == (at(2), v + 2)


def test_delete(store: Store) -> None:
    store.put(sched("a"), at(1), replace=False)
    store.delete("a")
    with pytest.raises(NotFound):
        store.delete("a")
    assert store.all() == []


def test_file_owns_its_schedules(store: Store) -> None:
    store.load_file([sched("f")], next_at_fixed(at(1)))  # type: ignore[arg-type]
    assert store.get("f").schedule.source is Source.FILE
    with pytest.raises(Conflict, match="config file"):
        store.put(sched("f"), at(1), replace=True)
    with pytest.raises(Conflict, match="config file"):
        store.delete("f")
    store.put(sched("api"), at(1), replace=False)
    before = store.change_count()
    with pytest.raises(Conflict, match="API"):
        store.load_file([sched("g"), sched("api")], next_at_fixed(at(1)))  # type: ignore[arg-type]
    assert [s.schedule.name for s in store.all()] == ["api", "f"]  # nothing written
    assert store.change_count() == before


def test_load_file_is_idempotent_and_keeps_run_state(store: Store) -> None:
    files = [sched("a"), sched("b"), sched("c")]
    result = store.load_file(files, next_at_fixed(at(1)))  # type: ignore[arg-type]
    assert (result.added, result.changed, result.removed) == (("a", "b", "c"), (), ())
    b = store.get("b")
    store.record(None, [pending("b", at(1))], [Advance("b", b.version, at(2), at(1), 1)])
    count = store.change_count()
    again = store.load_file(files, next_at_fixed(at(50)))  # type: ignore[arg-type]
    assert (again.added, again.changed, again.removed) == ((), (), ())
    assert store.change_count() == count
    assert store.get("b").next_at == at(2)

    # options changed: run state kept; timing changed: next_at recomputed
    edited = [sched("a", task="new.task"), sched("b", queue="q"), sched("c", every=30)]
    result = store.load_file(edited, next_at_fixed(at(7)))  # type: ignore[arg-type]
    assert result.changed == ("a", "b", "c")
    got_b, got_c = store.get("b"), store.get("c")
    assert (got_b.next_at, got_b.last_at, got_b.fires) == (at(2), at(1), 1)
    assert got_b.schedule.queue == "q"
    assert got_b.version == b.version + 1
    assert got_c.next_at == at(7)
    assert store.get("a").schedule.task == "new.task"


def test_reload_keeps_pause_and_delete_keeps_history(store: Store) -> None:
    store.load_file([sched("a"), sched("b")], next_at_fixed(at(1)))  # type: ignore[arg-type]
    store.set_paused("a", True, "maintenance", None)
    store.record(None, [pending("b", at(1))], [])
    store.put(sched("api"), at(1), replace=False)
    result = store.load_file([sched("a", queue="x")], next_at_fixed(at(1)))  # type: ignore[arg-type]
    assert result.removed == ("b",)
    a = store.get("a")
    assert (a.paused, a.note) == (True, "maintenance")
    assert [s.schedule.name for s in store.all()] == ["a", "api"]  # api untouched
    assert [r.schedule for r in store.history("b", 10)] == ["b"]


def test_pause_and_resume(store: Store) -> None:
    store.put(sched("a"), at(1), replace=False)
    v = store.get("a").version
    with pytest.raises(NotFound):
        store.set_paused("zz", True, None, None)
    store.set_paused("a", True, "why", None)
    got = store.get("a")
    assert (got.paused, got.note, got.next_at, got.version) == (True, "why", at(1), v + 1)
    assert store.due(at(10), 10) == []
    assert store.next_due_at() is None
    store.set_paused("a", False, None, at(30))
    got = store.get("a")
    assert (got.paused, got.note, got.next_at, got.version) == (False, None, at(30), v + 2)


def test_due_ordering_limit_and_next_due_at(store: Store) -> None:
    for name, minute in [("c", 3), ("a", 5), ("b", 1), ("d", 3), ("late", 100)]:
        store.put(sched(name), at(minute), replace=False)
    store.put(sched("done"), None, replace=False)  # finished: never due
    assert [s.schedule.name for s in store.due(at(10), 10)] == ["b", "c", "d", "a"]
    assert [s.schedule.name for s in store.due(at(10), 2)] == ["b", "c"]
    assert [s.schedule.name for s in store.due(at(3), 10)] == ["b", "c", "d"]
    assert store.next_due_at() == at(1)
    # the tick sizes its head start for a crowded instant by this count
    assert [store.due_count(at(m), 10) for m in (0, 1, 3, 10, 100)] == [0, 1, 3, 4, 5]
    assert store.due_count(at(100), 2) == 2
    store.set_paused("c", True, None, None)
    assert store.due_count(at(10), 10) == 3
    assert [s.schedule.name for s in store.all()] == ["a", "b", "c", "d", "done", "late"]


def test_due_reads_each_definition_as_it_is_now(store: Store) -> None:
    """The leader asks for due schedules over and over: a change must show at once."""
    store.put(sched("a", task="t.one"), at(1), replace=False)
    (first,) = store.due(at(10), 10)
    assert first.schedule.task == "t.one"
    store.delete("a")
    assert store.due(at(10), 10) == []
    store.put(sched("a", task="t.two"), at(1), replace=False)  # the same name again
    (again,) = store.due(at(10), 10)
    assert again.schedule.task == "t.two"
    assert again.version > first.version  # never the old one's: a stale advance is refused
    assert store.record(None, [], [Advance("a", first.version, at(2), at(1), 1)]) == []
    assert store.get("a").next_at == at(1)
    store.put(sched("a", task="t.three"), at(1), replace=True)
    assert [s.schedule.task for s in store.due(at(10), 10)] == ["t.three"]
    store.load_file([sched("f", task="t.file")], next_at_fixed(at(2)))
    assert [(s.schedule.name, s.schedule.source) for s in store.due(at(10), 10)] == [
        ("a", Source.API),
        ("f", Source.FILE),
    ]


def ahead(minutes: float) -> datetime:
    """An instant still to come, for fires recorded ahead of it."""
    return datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=60 + minutes)


def test_a_change_withdraws_fires_recorded_ahead(backend: Backend) -> None:
    """Pause, replace, delete and a reload apply to fires recorded but not due yet."""
    store = backend.store
    for name in ("paused", "replaced", "retimed", "deleted"):
        store.put(sched(name), ahead(0), replace=False)
    store.load_file([sched("filed"), sched("dropped")], next_at_fixed(ahead(0)))
    past = pending("paused", at(-1))  # due already, still unsent (broker down)
    everyone = ["paused", "replaced", "retimed", "deleted", "filed", "dropped"]
    store.record(None, [past] + [pending(n, ahead(m)) for n in everyone for m in (0, 1)], [])

    store.set_paused("paused", True, None, None)
    store.put(sched("replaced", task="app.tasks.new"), ahead(5), replace=True)
    store.put(sched("retimed", every=120), ahead(2), replace=True)
    store.delete("deleted")
    store.load_file([sched("filed", task="app.tasks.new")], next_at_fixed(ahead(5)))

    assert [m.fire_id for m in claimed(store, ahead(10))] == [past.fire_id]
    assert [f.scheduled_for for f in store.history("paused", 10)] == [at(-1)]
    # same timing: decided again from the first withdrawn instant, as now defined
    assert store.get("replaced").next_at == ahead(0)
    assert store.get("filed").next_at == ahead(0)
    # new timing: starts afresh; nothing left of the old instants
    assert store.get("retimed").next_at == ahead(2)
    assert store.history("retimed", 10) == []


def test_a_claimed_or_manual_fire_is_never_withdrawn(backend: Backend) -> None:
    """A change loses to a fire already going out: it stays, and is marked sent as sent."""
    store = backend.store
    store.put(sched("a"), ahead(0), replace=False)
    trigger = Decision(
        "a", ahead(0.5), fire_id("a", ahead(0.5)), Outcome.PENDING,
        message=message("a", ahead(0.5)), manual=True,
    )  # fmt: skip
    store.record(None, [pending("a", ahead(0)), pending("a", ahead(1)), trigger], [])
    (going,) = claimed(store, ahead(0))
    store.put(sched("a", task="app.tasks.new"), ahead(5), replace=True)
    assert {f.fire_id for f in store.history("a", 10)} == {going.fire_id, trigger.fire_id}
    assert store.get("a").next_at == ahead(1)  # decided again from the unclaimed one only
    assert store.get("a").last_at == ahead(0.5)  # what history still holds
    store.mark_sent([going.fire_id], ahead(0))
    assert store.history("a", 10)[-1].outcome is Outcome.SENT


def test_a_claim_is_fenced_and_a_new_term_claims_again(backend: Backend) -> None:
    store = backend.store
    store.record(None, [pending("a", at(1))], [])
    old = store.acquire("old", backend.short_ttl, "old")
    assert old is not None
    assert [m.schedule for m in store.claim(old, at(1), 10)] == ["a"]
    backend.expire(old)
    with pytest.raises(Fenced):
        store.claim(old, at(1), 10)
    new = store.acquire("new", timedelta(seconds=30), "new")
    assert new is not None
    assert [m.schedule for m in store.claim(new, at(1), 10)] == ["a"]  # the old relay is gone
    assert store.claim(new, at(1), 10) == []


def test_a_claim_returns_a_known_message_only_when_it_is_exactly_the_row(store: Store) -> None:
    mine, other = pending("a", at(1)), pending("b", at(1))
    assert mine.message is not None and other.message is not None
    store.record(None, [mine, other], [])
    stale = dataclasses.replace(other.message, body=b"[[], {}, {}]")  # an older definition
    known = {
        mine.fire_id: (mine.message.stamp, mine.message),
        other.fire_id: (stale.stamp, stale),
    }
    lease = store.acquire("relay", timedelta(seconds=30), "relay")
    assert lease is not None
    got = {m.schedule: m for m in store.claim(lease, at(1), 10, known)}
    assert got["a"] is mine.message  # the caller's own object: its prepared frames go out
    assert got["b"] == other.message and got["b"] is not stale  # read from the row


def test_instances_roll_call(store: Store) -> None:
    store.heartbeat("host:1", "t1")
    store.heartbeat("host:1", "t2")  # one instance_id, two processes
    since = store.db_now() - timedelta(seconds=5)
    seen = store.instances(since)
    assert [(i.holder, i.token) for i in seen] == [("host:1", "t1"), ("host:1", "t2")]
    first = seen[0]
    store.heartbeat("host:1", "t1")
    again = store.instances(since)[0]
    assert again.started_at == first.started_at and again.last_seen >= first.last_seen
    store.heartbeat("host:1", "t1", leaving=True)
    assert [i.token for i in store.instances(since)] == ["t2"]
    assert store.instances(store.db_now() + timedelta(seconds=5)) == []


# -- fire log ------------------------------------------------------------------


def test_record_with_lease_writes_fires_outbox_and_advances(backend: Backend) -> None:
    store = backend.store
    store.put(sched("a"), at(1), replace=False)
    lease = store.acquire("me", timedelta(seconds=30), "me")
    assert lease is not None
    v = store.get("a").version
    decisions = [pending("a", at(1)), dropped("a", at(0))]
    written = store.record(lease, decisions, [Advance("a", v, at(2), at(1), 1)])
    assert sorted(written) == sorted(d.fire_id for d in decisions)
    got = store.get("a")
    assert (got.next_at, got.last_at, got.fires, got.version) == (at(2), at(1), 1, v)
    records = store.history("a", 10)
    assert [(r.scheduled_for, r.outcome, r.epoch) for r in records] == [
        (at(1), Outcome.PENDING, lease.epoch),
        (at(0), Outcome.DROPPED, lease.epoch),
    ]
    assert records[1].reason == "grace"
    assert store.claim(lease, at(5), 10) == [message("a", at(1))]  # exact round trip
    assert store.backlog() == 1


def test_record_is_fenced_when_epoch_moved(backend: Backend) -> None:
    store = backend.store
    store.put(sched("a"), at(1), replace=False)
    old = store.acquire("old", backend.short_ttl, "old")
    assert old is not None
    backend.expire(old)
    new = store.acquire("new", timedelta(seconds=30), "new")
    assert new is not None and new.epoch == old.epoch + 1
    v = store.get("a").version
    with pytest.raises(Fenced):
        store.record(old, [pending("a", at(1))], [Advance("a", v, at(2), at(1), 1)])
    assert store.history(None, 10) == []
    assert store.get("a").next_at == at(1)
    assert store.backlog() == 0


def test_record_is_fenced_when_lease_expired(backend: Backend) -> None:
    store = backend.store
    lease = store.acquire("me", backend.short_ttl, "me")
    assert lease is not None
    backend.expire(lease)
    with pytest.raises(Fenced, match="expired"):
        store.record(lease, [pending("a", at(1))], [])
    assert store.history(None, 10) == []
    assert store.current() is None


def test_duplicate_instants_are_skipped(store: Store) -> None:
    assert store.record(None, [pending("a", at(1)), pending("a", at(2))], []) == [
        fire_id("a", at(1)),
        fire_id("a", at(2)),
    ]
    store.mark_sent([fire_id("a", at(1))], at(1))
    # same instants again (a second leader, a retry): nothing new, no new outbox row
    assert store.record(None, [pending("a", at(1)), pending("a", at(3))], []) == [
        fire_id("a", at(3))
    ]
    assert [m.scheduled_for for m in claimed(store, at(10))] == [at(2), at(3)]
    assert len(store.history("a", 10)) == 3
    assert store.history("a", 10)[2].outcome is Outcome.SENT


def test_advance_with_moved_version_is_skipped_with_its_decisions(store: Store) -> None:
    store.put(sched("a"), at(1), replace=False)
    store.put(sched("b"), at(1), replace=False)
    va, vb = store.get("a").version, store.get("b").version
    store.set_paused("a", True, None, None)  # moves a's version
    written = store.record(
        None,
        [pending("a", at(1)), pending("b", at(1))],
        [Advance("a", va, at(2), at(1), 1), Advance("b", vb, at(2), at(1), 1)],
    )
    assert written == [fire_id("b", at(1))]
    assert store.get("a").next_at == at(1)
    assert store.get("b").next_at == at(2)
    assert [r.schedule for r in store.history(None, 10)] == ["b"]
    # a deleted schedule's advance is skipped too
    store.delete("b")
    assert store.record(None, [pending("b", at(2))], [Advance("b", vb, at(3), at(2), 1)]) == []


def test_outbox_claim_mark_sent_and_failed(store: Store) -> None:
    lease = store.acquire("relay", timedelta(seconds=30), "relay")
    assert lease is not None
    store.record(
        None,
        [
            pending("a", at(1), publish_at=at(1.5)),
            pending("b", at(1)),
            pending("c", at(2)),
            dropped("d", at(1)),
        ],
        [],
    )
    assert store.backlog() == 3
    assert store.next_publish_at(lease.epoch) == at(1)
    assert store.claim(lease, at(0), 10) == []
    assert [m.schedule for m in store.claim(lease, at(1.5), 1)] == ["b"]
    assert [m.schedule for m in store.claim(lease, at(1.5), 10)] == ["a"]  # b is taken
    assert store.next_publish_at(lease.epoch) == at(2)  # claimed ones are not waited for
    assert store.next_publish_at(lease.epoch + 1) == at(1)  # ...but a new term takes them
    store.mark_sent([fire_id("b", at(1)), fire_id("a", at(1))], at(3))
    store.mark_failed(fire_id("c", at(2)), "unroutable: NO_ROUTE", at(4))
    assert store.backlog() == 0
    assert store.next_publish_at(lease.epoch) is None
    outcome = {r.schedule: (r.outcome, r.sent_at, r.reason) for r in store.history(None, 10)}
    assert outcome == {
        "a": (Outcome.SENT, at(3), None),
        "b": (Outcome.SENT, at(3), None),
        "c": (Outcome.FAILED, at(4), "unroutable: NO_ROUTE"),
        "d": (Outcome.DROPPED, None, "grace"),
    }
    store.mark_sent([fire_id("c", at(2))], at(5))  # a late confirm does not rewrite history
    assert store.history("c", 1)[0].outcome is Outcome.FAILED
    store.mark_sent([], at(5))


def test_history_newest_first_filter_and_limit(store: Store) -> None:
    store.record(None, [pending("a", at(m)) for m in (1, 3, 2)], [])
    store.record(None, [Decision("b", at(2.5), fire_id("b", at(2.5)), Outcome.DROPPED,
                                 reason="skip", manual=True)], [])  # fmt: skip
    assert [(r.schedule, r.scheduled_for) for r in store.history(None, 10)] == [
        ("a", at(3)), ("b", at(2.5)), ("a", at(2)), ("a", at(1)),
    ]  # fmt: skip
    assert [r.scheduled_for for r in store.history("a", 2)] == [at(3), at(2)]
    manual = store.history("b", 1)[0]
    assert manual.manual and manual.epoch is None and manual.fire_id == fire_id("b", at(2.5))


# -- lease ---------------------------------------------------------------------


def test_lease_acquire_renew_release_takeover(backend: Backend) -> None:
    store = backend.store
    assert store.current() is None
    first = store.acquire("a", timedelta(seconds=30), "a")
    assert first is not None and first.holder == "a"
    assert store.current() == first
    assert store.acquire("b", timedelta(seconds=30), "b") is None  # held
    # the same holder name from another process: refused, it is not ours
    assert store.acquire("a", timedelta(seconds=60), "another process") is None
    again = store.acquire("a", timedelta(seconds=60), "a")  # ours, asked again: a new term
    assert again is not None and again.epoch == first.epoch + 1
    assert again.expires_at > first.expires_at
    assert store.renew(first, timedelta(seconds=30)) is None  # the old term is over
    renewed = store.renew(again, timedelta(seconds=30))
    assert renewed is not None and renewed.epoch == again.epoch
    impostor = Lease("a", again.epoch, renewed.expires_at, "another process")
    assert store.renew(impostor, timedelta(seconds=1)) is None
    store.release(impostor)  # not ours: no effect
    assert store.current() == renewed
    store.release(renewed)
    assert store.current() is None
    assert store.renew(renewed, timedelta(seconds=30)) is None
    taken = store.acquire("b", backend.short_ttl, "b")
    assert taken is not None and (taken.holder, taken.epoch) == ("b", first.epoch + 2)
    backend.expire(taken)
    assert store.renew(taken, timedelta(seconds=30)) is None  # expired: lost
    third = store.acquire("c", timedelta(seconds=30), "c")
    assert third is not None and third.epoch == first.epoch + 3
    skew = abs((store.db_now() - datetime.now(UTC)).total_seconds())
    assert skew < 5 or backend.kind == "memory"


# -- change signal -------------------------------------------------------------


def test_change_counter(store: Store) -> None:
    seen = [store.change_count()]

    def moved() -> bool:
        seen.append(store.change_count())
        return seen[-1] > seen[-2]

    store.put(sched("a"), at(1), replace=False)
    assert moved()
    store.set_paused("a", True, None, None)
    assert moved()
    store.set_paused("a", False, None, at(2))
    assert moved()
    lease = store.acquire("me", timedelta(seconds=30), "me")
    assert lease is not None
    store.record(
        lease, [pending("a", at(1))], [Advance("a", store.get("a").version, at(2), at(1), 1)]
    )
    assert not moved()  # the leader's own fires and run state are not a change
    store.record(None, [pending("a", at(5))], [])
    assert moved()  # a trigger or backfill: the leader hears of it at once, from any process
    store.load_file([sched("f")], next_at_fixed(at(1)))  # type: ignore[arg-type]
    assert moved()
    store.load_file([sched("f")], next_at_fixed(at(1)))  # type: ignore[arg-type]
    assert not moved()
    store.delete("a")
    assert moved()


def test_wait_for_change_wakes_on_a_change(store: Store) -> None:
    wait = getattr(store, "wait_for_change")  # noqa: B009 - optional, not in the Protocol
    since = store.change_count()
    assert wait(since, 0.05) == since  # times out
    timer = threading.Timer(0.3, lambda: store.put(sched("a"), at(1), replace=False))
    timer.start()
    try:
        assert wait(since, 10.0) == since + 1
    finally:
        timer.join()


def test_load_file_refuses_a_name_listed_twice(store: Store) -> None:
    with pytest.raises(ConfigError, match="more than once: a"):
        store.load_file([sched("a"), sched("b"), sched("a")], next_at_fixed(at(1)))  # type: ignore[arg-type]
    assert store.all() == []


def test_threads_racing_for_an_expired_lease_make_one_leader(backend: Backend) -> None:
    store = backend.store
    old = store.acquire("old", backend.short_ttl, "old")
    assert old is not None
    backend.expire(old)
    start = threading.Barrier(8)
    won: list[Lease] = []

    def contend(holder: str) -> None:
        start.wait()
        lease = store.acquire(holder, timedelta(seconds=30), holder)
        if lease is not None:
            won.append(lease)

    threads = [threading.Thread(target=contend, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and won[0].epoch == old.epoch + 1
    assert store.current() == won[0]
