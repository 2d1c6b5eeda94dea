"""Leader state machine, tick and relay over the memory store with a FakeClock."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from beatd import timing
from beatd.clock import FakeClock
from beatd.errors import BrokerError, StoreError
from beatd.leader import DatabaseTime, Leader, default_holder
from beatd.model import Decision, Every, Lease, Message, Misfire, Outcome, Schedule
from beatd.publish.base import Result, Status
from beatd.publish.messages import build_message
from beatd.publish.retry import RetryPolicy
from beatd.relay import REREAD, SETTLE_AFTER, Relay
from beatd.store.memory import MemoryStore
from beatd.tick import Ticker

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=3)


def sched(name: str, every: int = 1, **options: Any) -> Schedule:
    return Schedule(name=name, spec=Every(timedelta(seconds=every)), task=f"t.{name}", **options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock)


def load(store: MemoryStore, clock: FakeClock, *schedules: Schedule) -> None:
    now = clock.now()
    store.load_file(schedules, lambda s: timing.next_after(s, now))


# -- leader -------------------------------------------------------------------


def test_holder_defaults_to_host_and_pid() -> None:
    host, _, pid = default_holder().rpartition(":")
    assert host and pid.isdigit()


def test_acquire_then_renew_keeps_the_epoch(store: MemoryStore, clock: FakeClock) -> None:
    leader = Leader(store, clock, TTL, "a")
    assert not leader.is_leading()
    assert leader.step() == pytest.approx(1.0)  # renew every lease/3
    assert leader.is_leading()
    first = leader.lease
    assert first is not None and first.holder == "a"
    clock.advance(1)
    leader.step()
    assert leader.lease is not None and leader.lease.epoch == first.epoch
    assert leader.lease.expires_at == clock.now() + TTL


def test_a_standby_waits_and_polls_quickly(store: MemoryStore, clock: FakeClock) -> None:
    a, b = Leader(store, clock, TTL, "a"), Leader(store, clock, TTL, "b")
    a.step()
    assert b.step() == pytest.approx(0.5)
    assert not b.is_leading()
    assert store.current() is not None and store.current().holder == "a"  # type: ignore[union-attr]


class Flaky:
    """A lease store that fails while `down` is set."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner, self.down = inner, False

    def __getattr__(self, name: str) -> Any:
        if self.down:
            raise StoreError("database unreachable")
        return getattr(self.inner, name)


def test_a_leader_that_cannot_renew_self_fences_before_expiry(
    store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(store)
    leader = Leader(flaky, clock, TTL, "a")
    leader.step()
    lease = leader.lease
    assert lease is not None
    flaky.down = True
    failures = 0
    with caplog.at_level(logging.ERROR, "beatd"):
        while leader.is_leading():
            clock.advance(leader.step())
            failures += 1
    # it stopped deciding while its lease was still valid by the database clock
    assert clock.now() < lease.expires_at
    assert clock.now() >= lease.expires_at - TTL + TTL - timedelta(seconds=leader.margin)
    assert len([r for r in caplog.records if "cannot renew" in r.message]) == 1
    assert failures >= 2
    flaky.down = False
    leader.step()  # still ours in the store: taken back with the same epoch
    assert leader.lease is not None and leader.lease.epoch == lease.epoch


def test_an_expired_lease_goes_to_the_standby_with_a_new_epoch(
    store: MemoryStore, clock: FakeClock
) -> None:
    a, b = Leader(store, clock, TTL, "a"), Leader(store, clock, TTL, "b")
    a.step()
    old = a.lease
    assert old is not None
    clock.advance(TTL + timedelta(milliseconds=1))
    assert not a.is_leading()
    b.step()
    assert b.lease is not None and b.lease.epoch == old.epoch + 1
    a.step()
    assert not a.is_leading()


def test_release_hands_over_at_once(store: MemoryStore, clock: FakeClock) -> None:
    a, b = Leader(store, clock, TTL, "a"), Leader(store, clock, TTL, "b")
    a.step()
    a.release()
    assert not a.is_leading()
    b.step()
    assert b.is_leading()


def test_database_time_warns_once_per_skew_and_ignores_wall_jumps(
    store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    local = FakeClock(T0 - timedelta(seconds=2))  # this host: 2 s behind the database

    def advance(seconds: float) -> None:
        local.advance(seconds)
        clock.advance(seconds)

    time = DatabaseTime(store, local)
    assert time.now() == local.now()  # before the first reading: the local clock
    with caplog.at_level(logging.INFO, "beatd"):
        time.sync()
        assert time.now() == clock.now()
        advance(0.5)
        time.sync()  # within RESYNC: not read again
        advance(5)
        time.sync()  # read again, same skew: no second warning
        local.set(local.now() + timedelta(hours=1))  # the wall clock is stepped
        assert time.now() == clock.now()
        advance(5)
        assert time.now() == clock.now()
        time.sync()
        local.set(clock.now())  # ...and set right
        advance(5)
        time.sync()
    messages = [r.getMessage() for r in caplog.records]
    warnings = [m for m in messages if "off the database" in m]
    assert len(warnings) == 2
    assert warnings[0].startswith("this host's clock is -2.000s off")
    assert warnings[1].startswith("this host's clock is +3598.000s off")
    assert messages[-1] == "this host's clock agrees with the database's again"


# -- tick ---------------------------------------------------------------------


def leading(store: MemoryStore, clock: FakeClock, holder: str = "a") -> Leader:
    leader = Leader(store, clock, TTL, holder)
    leader.step()
    assert leader.is_leading()
    return leader


def test_tick_records_each_instant_once(store: MemoryStore, clock: FakeClock) -> None:
    load(store, clock, sched("a"), sched("b", 2))
    ticker = Ticker(store, leading(store, clock), build_message, lookahead=timedelta(0))
    clock.advance(2)
    now = clock.now()
    assert ticker.tick(now) == now + timedelta(seconds=1)
    assert ticker.tick(now) == now + timedelta(seconds=1)  # idempotent at the same now
    fires = store.history(None, 100)
    assert sorted((f.schedule, f.scheduled_for) for f in fires) == [
        ("a", T0 + timedelta(seconds=1)),
        ("a", T0 + timedelta(seconds=2)),
        ("b", T0 + timedelta(seconds=2)),
    ]
    # T0+1s is a second late at T0+2s: still on time, so sent
    assert {f.outcome for f in fires} == {Outcome.PENDING}
    assert store.backlog() == 3
    assert {f.epoch for f in fires} == {1}


def test_a_slow_tick_is_late_not_missed_but_a_new_term_misses(
    store: MemoryStore, clock: FakeClock
) -> None:
    load(store, clock, sched("a"))  # coalesce
    leader = leading(store, clock)
    ticker = Ticker(store, leader, build_message, lookahead=timedelta(0))
    clock.advance(1)
    leader.step()
    ticker.tick(clock.now())  # the term begins at T0+1s
    clock.advance(2.5)  # a busy leader gets back 2.5 s later (its lease still holds)
    leader.step()
    ticker.tick(clock.now())
    outcomes = [(f.scheduled_for - T0, f.outcome) for f in store.history("a", 10)]
    assert sorted(outcomes) == [(timedelta(seconds=s), Outcome.PENDING) for s in range(1, 4)]
    # the leader dies; a standby takes over 5 s later: those instants were missed
    clock.advance(5)
    successor = leading(store, clock, "b")
    Ticker(store, successor, build_message, lookahead=timedelta(0)).tick(clock.now())
    late = {f.scheduled_for - T0: f.outcome for f in store.history("a", 10)}
    assert [late[timedelta(seconds=s)] for s in range(4, 9)] == [Outcome.DROPPED] * 4 + [
        Outcome.PENDING
    ]


def test_tick_records_ahead_and_the_relay_publishes_at_the_instant(
    store: MemoryStore, clock: FakeClock
) -> None:
    load(store, clock, sched("a", 10))
    leader = leading(store, clock)
    ticker = Ticker(store, leader, build_message, lookahead=timedelta(milliseconds=500))
    clock.advance(9.6)
    leader.step()
    # at T0+9.6s the fire of T0+10s is recorded; the next tick is due 3/4 of
    # the lookahead before T0+20s, off the instants the relay publishes at
    assert ticker.tick(clock.now()) == T0 + timedelta(seconds=19.625)
    (fire,) = store.history("a", 10)
    assert fire.scheduled_for == T0 + timedelta(seconds=10) and fire.outcome is Outcome.PENDING
    pub = Recording()
    relay = Relay(store, pub, clock)
    assert relay.run_once(clock.now()) == T0 + timedelta(seconds=10)
    assert pub.sent == []
    clock.set(T0 + timedelta(seconds=10))
    assert relay.run_once(clock.now()) is None
    assert [m.scheduled_for for m in pub.sent] == [T0 + timedelta(seconds=10)]


def test_a_crowded_instant_is_recorded_before_it_is_due(
    store: MemoryStore, clock: FakeClock
) -> None:
    # 600 schedules share T0+60s. Recording costs 20 ms a fire here, so the
    # tick wakes 12 s ahead (not 3/4 of its 2 s lookahead) and records all of
    # them then, beyond its usual horizon: at the instant only publishing is left.
    load(store, clock, *(sched(f"s{i:03}", 60) for i in range(600)))
    leader = leading(store, clock)
    lookahead = timedelta(seconds=2)
    quick = Ticker(store, leader, build_message, lookahead=lookahead)
    assert quick.tick(clock.now()) == T0 + timedelta(seconds=58.5)  # 0.18 s to record: the usual
    ticker = Ticker(
        store, leader, build_message, lookahead=lookahead, record_cost=timedelta(milliseconds=20)
    )
    assert ticker.tick(clock.now()) == T0 + timedelta(seconds=48)
    clock.set(T0 + timedelta(seconds=30))
    leader.step()
    ticker.tick(clock.now())  # woken early (a change, the lease): not time for the crowd yet
    assert store.history(None, 1000) == []
    clock.set(T0 + timedelta(seconds=48))
    leader.step()
    ticker.tick(clock.now())
    fires = store.history(None, 1000)
    assert len(fires) == 600
    assert {(f.scheduled_for, f.outcome) for f in fires} == {
        (T0 + timedelta(seconds=60), Outcome.PENDING)
    }


def test_tick_records_nothing_when_not_leading(store: MemoryStore, clock: FakeClock) -> None:
    load(store, clock, sched("a"))
    ticker = Ticker(store, Leader(store, clock, TTL, "a"), build_message)
    clock.advance(5)
    assert ticker.tick(clock.now()) is None
    assert store.history(None, 10) == []


def test_a_fenced_tick_writes_and_advances_nothing(store: MemoryStore, clock: FakeClock) -> None:
    load(store, clock, sched("a", misfire=Misfire.ALL))
    old = leading(store, clock, "old")
    ticker = Ticker(store, old, build_message)
    # "old" believes it leads (its self-fence margin is generous), but the
    # store already gave the lease to "new".
    store._lease = Lease("new", 9, clock.now() + TTL)
    before = store.get("a")
    clock.advance(1)
    assert ticker.tick(clock.now()) is None
    assert not old.is_leading()
    assert store.history(None, 10) == []
    assert store.get("a").next_at == before.next_at


def test_tick_works_through_batches(store: MemoryStore, clock: FakeClock) -> None:
    load(store, clock, *(sched(f"s{i:03}", 60) for i in range(450)))
    woken: list[int] = []
    leader = leading(store, clock)
    ticker = Ticker(
        store, leader, build_message, batch=100, on_recorded=lambda _, m: woken.append(len(m))
    )
    clock.advance(60)
    leader.step()
    ticker.tick(clock.now())
    assert store.backlog() == 450
    assert woken == [50, 100, 100, 100, 100]  # a term's first transaction is short: sent sooner


def test_a_long_catch_up_commits_as_it_goes(store: MemoryStore, clock: FakeClock) -> None:
    load(store, clock, *(sched(f"s{i}", misfire=Misfire.ALL) for i in range(3)))
    recorded: list[int] = []
    clock.advance(50)  # down for 50 s: 50 missed instants each
    leader = leading(store, clock)
    ticker = Ticker(
        store,
        leader,
        build_message,
        fires_per_commit=60,
        lookahead=timedelta(0),
        on_recorded=lambda _, m: recorded.append(len(m)),
    )
    ticker.tick(clock.now())
    assert recorded == [100, 50]  # two schedules reach 60, the third comes next
    assert store.backlog() == 150


# -- relay --------------------------------------------------------------------


class Recording:
    """A publisher that records what it confirmed; can fail or answer per fire."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.fail = 0  # fail this many next calls
        self.calls = 0
        self.answers: dict[str, Status] = {}

    def publish(self, messages: Sequence[Message], now: datetime) -> list[Result]:
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise BrokerError("connection lost")
        results = []
        for m in messages:
            status = self.answers.get(m.fire_id, Status.CONFIRMED)
            if status is Status.CONFIRMED:
                self.sent.append(m)
            results.append(Result(m.fire_id, status, "no route" if status != "confirmed" else None))
        return results

    def prepare(self, messages: Sequence[Message]) -> None:
        pass

    def check(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def recorded(store: MemoryStore, clock: FakeClock, *schedules: Schedule, seconds: int) -> None:
    load(store, clock, *schedules)
    leader = leading(store, clock)
    ticker = Ticker(store, leader, build_message, lookahead=timedelta(0))
    for _ in range(seconds):
        clock.advance(1)
        leader.step()
        ticker.tick(clock.now())


def test_relay_marks_sent_only_after_the_confirm(store: MemoryStore, clock: FakeClock) -> None:
    recorded(store, clock, sched("a"), seconds=3)
    pub = Recording()
    relay = Relay(store, pub, clock)
    assert relay.run_once(clock.now()) is None
    assert [m.scheduled_for for m in pub.sent] == [T0 + timedelta(seconds=s) for s in (1, 2, 3)]
    assert store.backlog() == 0
    assert {f.outcome for f in store.history("a", 10)} == {Outcome.SENT}
    assert relay.metrics.sent._value.get() == 3


def test_nacked_stays_returned_fails(store: MemoryStore, clock: FakeClock) -> None:
    recorded(store, clock, sched("a"), sched("b"), seconds=1)
    pub = Recording()
    ids = {m.schedule: m.fire_id for m in store.pending(clock.now(), 10)}
    pub.answers = {ids["a"]: Status.NACKED, ids["b"]: Status.RETURNED}
    relay = Relay(store, pub, clock, retry=RetryPolicy(initial=2.0))
    assert relay.run_once(clock.now()) == clock.now() + timedelta(seconds=2)
    assert [m.fire_id for m in store.pending(clock.now(), 10)] == [ids["a"]]
    outcomes = {f.schedule: (f.outcome, f.reason) for f in store.history(None, 10)}
    assert outcomes == {"a": (Outcome.PENDING, None), "b": (Outcome.FAILED, "no route")}
    pub.answers = {}  # the broker takes it this time
    clock.advance(2)
    assert relay.run_once(clock.now()) is None
    assert [m.fire_id for m in pub.sent] == [ids["a"]]
    assert store.backlog() == 0


def test_broker_failure_keeps_the_backlog_and_sends_it_in_order_later(
    store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    recorded(store, clock, sched("a", misfire=Misfire.ALL), seconds=5)
    pub = Recording()
    pub.fail = 3
    relay = Relay(store, pub, clock, retry=RetryPolicy(initial=0.5, max=30))
    delays = []
    with caplog.at_level(logging.ERROR, "beatd"):
        for _ in range(3):
            retry_at = relay.run_once(clock.now())
            assert retry_at is not None
            delays.append((retry_at - clock.now()).total_seconds())
            assert relay.run_once(clock.now()) == retry_at  # no call before the backoff ends
            assert store.backlog() == 5
            clock.set(retry_at)
    assert delays == [0.5, 1.0, 2.0]
    assert pub.calls == 3
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert relay.run_once(clock.now()) is None
    assert [m.scheduled_for for m in pub.sent] == [T0 + timedelta(seconds=s) for s in range(1, 6)]
    assert store.backlog() == 0


def test_relay_sends_nothing_when_not_leading(store: MemoryStore, clock: FakeClock) -> None:
    recorded(store, clock, sched("a"), seconds=1)
    pub = Recording()
    relay = Relay(store, pub, clock, term=lambda: None)
    relay.run_once(clock.now())
    assert pub.calls == 0 and store.backlog() == 1


def test_relay_waits_for_a_jittered_publish(store: MemoryStore, clock: FakeClock) -> None:
    recorded(store, clock, sched("a", 10, jitter=timedelta(seconds=5)), seconds=10)
    (message,) = store.pending(clock.now() + timedelta(seconds=10), 10)
    pub = Recording()
    relay = Relay(store, pub, clock)
    if message.publish_at > clock.now():
        assert relay.run_once(clock.now()) == message.publish_at
        assert pub.calls == 0
        clock.set(message.publish_at)
    assert relay.run_once(clock.now()) is None
    assert [m.fire_id for m in pub.sent] == [message.fire_id]


class Blind:
    """The memory store's fire log with an outbox read that finds nothing."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def pending(self, now: datetime, limit: int) -> list[Message]:
        return []


def ticking(store: MemoryStore, clock: FakeClock, relay: Relay) -> tuple[Leader, Ticker]:
    leader = leading(store, clock)
    relay.term = lambda: leader.lease.epoch if leader.lease else None
    return leader, Ticker(store, leader, build_message, on_recorded=relay.offer)


def test_the_relay_publishes_what_the_tick_hands_it_without_reading_it_back(
    store: MemoryStore, clock: FakeClock
) -> None:
    load(store, clock, *(sched(f"s{i}", 10) for i in range(3)))
    pub = Recording()
    relay = Relay(Blind(store), pub, clock)  # type: ignore[arg-type]
    leader, ticker = ticking(store, clock, relay)
    clock.advance(9.6)
    leader.step()
    ticker.tick(clock.now())  # records T0+10s ahead and hands it over
    assert relay.run_once(clock.now()) == T0 + timedelta(seconds=10)
    assert pub.sent == []
    clock.set(T0 + timedelta(seconds=10))
    relay.run_once(clock.now())
    assert sorted(m.schedule for m in pub.sent) == ["s0", "s1", "s2"]
    assert store.backlog() == 0  # nothing more due: marked sent at once


def record_at(
    store: MemoryStore, schedule: Schedule, at: datetime, publish_at: datetime
) -> Message:
    """Record one pending fire the way a trigger does (no lease); returns its message."""
    message = build_message(schedule, at, publish_at)
    decision = Decision(schedule.name, at, message.fire_id, Outcome.PENDING, None, message)
    store.record(None, [decision], [])
    return message


def test_confirmed_fires_are_marked_sent_together_at_most_settle_after_late(
    store: MemoryStore, clock: FakeClock
) -> None:
    at = T0 + timedelta(seconds=10)
    record_at(store, sched("a"), at, at)
    record_at(store, sched("b"), at, at + SETTLE_AFTER / 2)
    pub = Recording()
    relay = Relay(store, pub, clock)
    clock.set(at)
    # "a" is confirmed; "b" is due before the mark would be late, so the mark waits for it
    assert relay.run_once(clock.now()) == at + SETTLE_AFTER / 2
    assert [m.schedule for m in pub.sent] == ["a"] and store.backlog() == 2
    clock.set(at + SETTLE_AFTER / 2)
    assert relay.run_once(clock.now()) is None
    assert [m.schedule for m in pub.sent] == ["a", "b"] and store.backlog() == 0
    assert {f.outcome for f in store.history(None, 10)} == {Outcome.SENT}


def test_a_fire_recorded_elsewhere_is_read_within_reread(
    store: MemoryStore, clock: FakeClock
) -> None:
    pub = Recording()
    relay = Relay(store, pub, clock)
    assert relay.run_once(clock.now()) is None
    record_at(store, sched("t"), clock.now(), clock.now())  # `beatd trigger` in another process
    clock.advance(REREAD.total_seconds())
    relay.run_once(clock.now())
    assert [m.schedule for m in pub.sent] == ["t"]


def test_an_offer_is_not_resent_after_a_read_sent_it(store: MemoryStore, clock: FakeClock) -> None:
    message = record_at(store, sched("a"), T0, T0)
    pub = Recording()
    relay = Relay(store, pub, clock)
    relay.run_once(clock.now())  # the read won the race to the tick's hand-over
    relay.offer(0, [message])
    clock.advance(0.1)
    relay.run_once(clock.now())
    assert [m.fire_id for m in pub.sent] == [message.fire_id]


def test_an_offer_from_an_earlier_term_is_left_to_the_outbox(
    store: MemoryStore, clock: FakeClock
) -> None:
    term = [1]
    pub = Recording()
    relay = Relay(store, pub, clock, term=lambda: term[0])
    relay.run_once(clock.now())
    message = record_at(store, sched("a"), T0 + timedelta(seconds=5), T0 + timedelta(seconds=5))
    term[0] = 2
    relay.offer(1, [message])
    assert relay.run_once(clock.now()) == message.publish_at  # known from the new term's read
    clock.set(message.publish_at)
    relay.run_once(clock.now())
    assert [m.fire_id for m in pub.sent] == [message.fire_id]


def test_a_paused_schedule_s_held_fire_is_not_sent(store: MemoryStore, clock: FakeClock) -> None:
    load(store, clock, sched("a", 10), sched("b", 10))
    pub = Recording()
    relay = Relay(store, pub, clock)
    leader, ticker = ticking(store, clock, relay)
    clock.advance(9.5)
    leader.step()
    ticker.tick(clock.now())  # both fires of T0+10s recorded ahead and held by the relay
    relay.run_once(clock.now())
    store.set_paused("a", True, None, None)
    relay.recheck()  # the daemon's watcher saw the change
    clock.set(T0 + timedelta(seconds=10))
    relay.run_once(clock.now())
    assert [m.schedule for m in pub.sent] == ["b"]


def test_a_burst_read_before_its_offers_arrive_is_sent_once(
    store: MemoryStore, clock: FakeClock
) -> None:
    """The relay may read fires the tick committed before their hand-over reaches it."""
    messages = [record_at(store, sched(f"s{i:04}"), T0, T0) for i in range(5000)]
    pub = Recording()
    relay = Relay(store, pub, clock)
    relay.run_once(clock.now())  # reads and sends all 5,000
    relay.offer(0, messages)  # the tick's hand-over, late
    clock.advance(0.1)
    relay.run_once(clock.now())
    assert len(pub.sent) == 5000 == len({m.fire_id for m in pub.sent})
