"""Leader state machine, tick and relay over the memory store with a FakeClock."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from beatd import relay as relay_module
from beatd import timing
from beatd.clock import FakeClock
from beatd.errors import BrokerError, Fenced, StoreError
from beatd.leader import DatabaseTime, Leader, default_holder
from beatd.model import WHOLE, Decision, Every, Lease, Message, Misfire, Outcome, Schedule, Source
from beatd.publish.base import Result, Status
from beatd.publish.messages import build_message
from beatd.publish.retry import RetryPolicy
from beatd.relay import AHEAD, IDLE_CHECK, MAX_NACKS, SETTLE_AFTER, Relay
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
    leader.step()  # still ours in the store: taken back, but as a new term
    assert leader.lease is not None and leader.lease.epoch == lease.epoch + 1


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
    clock.advance(2)  # a busy leader gets back 2 s later (its lease still holds)
    leader.step()
    ticker.tick(clock.now())
    outcomes = [(f.scheduled_for - T0, f.outcome) for f in store.history("a", 10)]
    assert sorted(outcomes) == [(timedelta(seconds=s), Outcome.PENDING) for s in range(1, 4)]
    # the leader dies; a standby takes over 5.5 s later: those instants were missed
    clock.advance(5.5)
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
    relay = Relay(store, pub, clock, leader=leader)
    wake = relay.run_once(clock.now())  # claimed, held until its instant
    assert wake is not None and wake <= T0 + timedelta(seconds=10)
    assert pub.sent == []
    clock.set(T0 + timedelta(seconds=10))
    relay.run_once(clock.now())
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


def test_a_crowd_behind_an_every_second_schedule_is_recorded_from_when_it_is_seen(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Found by the burst benchmark: its every-second probe made each next instant a
    small one, so the minute's crowd was seen only 2.5 s ahead, and the tick's 1 s
    spacing put off recording it to 1.5 s ahead: 10,000 fires took longer than that,
    and the last 500 went out 2 s late."""
    load(store, clock, sched("probe"), *(sched(f"s{i:03}", 60) for i in range(600)))
    leader = leading(store, clock)
    ticker = Ticker(
        store, leader, build_message, record_cost=timedelta(milliseconds=5)
    )  # 600 fires: a 3 s head start, more than the usual 1.5 s
    clock.set(T0 + timedelta(seconds=57.5))
    leader.step()
    assert ticker.tick(clock.now()) == clock.now()  # the crowd is next: go on at once
    ticker.tick(clock.now())
    at_60 = [f.schedule for f in store.history(None, 2000) if f.scheduled_for == at(60)]
    assert len(at_60) == 601  # the crowd and the probe


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
    store._leases[WHOLE] = Lease("new", 9, clock.now() + TTL)
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
        store, leader, build_message, batch=100, on_recorded=lambda m: woken.append(len(m))
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
        on_recorded=lambda m: recorded.append(len(m)),
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


def recorded(store: MemoryStore, clock: FakeClock, *schedules: Schedule, seconds: int) -> Leader:
    load(store, clock, *schedules)
    leader = leading(store, clock)
    ticker = Ticker(store, leader, build_message, lookahead=timedelta(0))
    for _ in range(seconds):
        clock.advance(1)
        leader.step()
        ticker.tick(clock.now())
    return leader


def relay_for(
    store: MemoryStore, clock: FakeClock, leader: Leader | None = None, **kw: Any
) -> Relay:
    return Relay(
        store, kw.pop("pub", Recording()), clock, leader=leader or leading(store, clock), **kw
    )


def drain(relay: Relay, clock: FakeClock, until: datetime) -> None:
    """Run the relay (and renew its lease) at every wake-up it asks for, up to `until`."""
    while clock.now() <= until:
        relay.leader.step()  # type: ignore[attr-defined]
        wake = relay.run_once(clock.now())
        if wake is None or wake > until:
            break
        clock.set(max(wake, clock.now() + timedelta(milliseconds=1)))


def test_relay_marks_sent_only_after_the_confirm(store: MemoryStore, clock: FakeClock) -> None:
    leader = recorded(store, clock, sched("a"), seconds=3)
    pub = Recording()
    relay = relay_for(store, clock, leader, pub=pub)
    relay.run_once(clock.now())
    assert [m.scheduled_for for m in pub.sent] == [T0 + timedelta(seconds=s) for s in (1, 2, 3)]
    assert store.backlog() == 0
    assert {f.outcome for f in store.history("a", 10)} == {Outcome.SENT}
    assert relay.metrics.sent._value.get() == 3


def test_a_nacked_fire_backs_off_alone_and_a_returned_one_fails(
    store: MemoryStore, clock: FakeClock
) -> None:
    leader = recorded(store, clock, sched("a"), sched("b"), sched("c"), seconds=1)
    pub = Recording()
    ids = {f.schedule: f.fire_id for f in store.history(None, 10)}
    pub.answers = {ids["a"]: Status.NACKED, ids["b"]: Status.RETURNED}
    relay = relay_for(store, clock, leader, pub=pub)
    wake = relay.run_once(clock.now())
    assert [m.schedule for m in pub.sent] == ["c"]  # not held up by the full queue of "a"
    outcomes = {f.schedule: (f.outcome, f.reason) for f in store.history(None, 10)}
    assert outcomes == {
        "a": (Outcome.PENDING, None),
        "b": (Outcome.FAILED, "no route"),
        "c": (Outcome.SENT, None),
    }
    assert wake is not None and wake <= clock.now() + timedelta(seconds=0.5)
    assert relay.failures == 0  # the broker itself is fine: no relay-wide backoff
    pub.answers = {}  # the queue has room again
    drain(relay, clock, clock.now() + timedelta(seconds=1))
    assert [m.schedule for m in pub.sent] == ["c", "a"]
    assert store.backlog() == 0


def test_a_fire_nacked_max_nacks_times_is_failed_not_stuck(
    store: MemoryStore, clock: FakeClock
) -> None:
    leader = recorded(store, clock, sched("a", 3600), seconds=3600)
    pub = Recording()
    (fire,) = store.history("a", 10)
    pub.answers = {fire.fire_id: Status.NACKED}
    relay = relay_for(store, clock, leader, pub=pub)
    deadline = clock.now() + timedelta(hours=1)
    while store.backlog() and clock.now() < deadline:
        drain(relay, clock, clock.now() + timedelta(seconds=30))
    assert pub.calls == MAX_NACKS
    (fire,) = store.history("a", 10)
    assert fire.outcome is Outcome.FAILED and fire.reason is not None
    assert f"refused by the broker {MAX_NACKS} times" in fire.reason
    assert store.backlog() == 0


def test_broker_failure_keeps_the_backlog_and_sends_it_in_order_later(
    store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    leader = recorded(store, clock, sched("a", misfire=Misfire.ALL), seconds=5)
    pub = Recording()
    pub.fail = 3
    relay = relay_for(store, clock, leader, pub=pub, retry=RetryPolicy(initial=0.5, max=30))
    delays = []
    with caplog.at_level(logging.ERROR, "beatd"):
        for _ in range(3):
            retry_at = relay.run_once(clock.now())
            assert retry_at is not None
            delays.append((retry_at - clock.now()).total_seconds())
            assert relay.run_once(clock.now()) == retry_at  # no call before the backoff ends
            assert store.backlog() == 5
            clock.set(retry_at)
            leader.step()
    assert delays == [0.5, 1.0, 2.0]
    assert pub.calls == 3
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    relay.run_once(clock.now())
    assert [m.scheduled_for for m in pub.sent] == [T0 + timedelta(seconds=s) for s in range(1, 6)]
    assert store.backlog() == 0


def test_a_broker_outage_keeps_the_offered_messages_bounded(
    store: MemoryStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick offers what it records every second of an outage; the relay, backing off,
    still takes the offers into its bounded cache, or they would pile up in memory."""
    monkeypatch.setattr(relay_module, "KNOWN", 10)
    leader = recorded(store, clock, sched("a"), seconds=1)
    pub = Recording()
    pub.fail = 1000
    relay = relay_for(store, clock, leader, pub=pub)
    retry_at = relay.run_once(clock.now())
    assert retry_at is not None  # the broker failed: backing off
    for second in range(50):
        instant = clock.now() + timedelta(seconds=second + 2)
        relay.offer([build_message(sched("a"), instant, instant)])
    assert relay.run_once(clock.now()) == retry_at  # still backing off, no publish
    assert pub.calls == 1
    assert len(relay._offers) == 0 and len(relay._known) <= 10


def test_relay_sends_nothing_when_not_leading(store: MemoryStore, clock: FakeClock) -> None:
    recorded(store, clock, sched("a"), seconds=1)
    pub = Recording()
    relay = relay_for(store, clock, Leader(store, clock, TTL, "standby"), pub=pub)
    assert relay.run_once(clock.now()) is None
    assert pub.calls == 0 and store.backlog() == 1


def test_relay_waits_for_a_jittered_publish(store: MemoryStore, clock: FakeClock) -> None:
    leader = recorded(store, clock, sched("a", 10, jitter=timedelta(seconds=5)), seconds=10)
    pub = Recording()
    relay = relay_for(store, clock, leader, pub=pub)
    drain(relay, clock, T0 + timedelta(seconds=15))
    (message,) = pub.sent
    assert message.scheduled_for == T0 + timedelta(seconds=10)
    assert T0 + timedelta(seconds=10) <= message.publish_at <= clock.now()


def record_at(
    store: MemoryStore, schedule: Schedule, at: datetime, publish_at: datetime, **kw: Any
) -> Message:
    """Record one pending fire the way a trigger does (no lease); returns its message."""
    message = build_message(schedule, at, publish_at)
    decision = Decision(schedule.name, at, message.fire_id, Outcome.PENDING, None, message, **kw)
    store.record(None, [decision], [])
    return message


def test_confirmed_fires_are_marked_sent_together_at_most_settle_after_late(
    store: MemoryStore, clock: FakeClock
) -> None:
    at = T0 + timedelta(seconds=10)
    record_at(store, sched("a"), at, at)
    record_at(store, sched("b"), at, at + SETTLE_AFTER / 2)
    clock.set(at)
    pub = Recording()
    relay = relay_for(store, clock, pub=pub)
    # "a" is confirmed; "b" is due before the mark would be late, so the mark waits for it
    assert relay.run_once(clock.now()) == at + SETTLE_AFTER / 2
    assert [m.schedule for m in pub.sent] == ["a"] and store.backlog() == 2
    clock.set(at + SETTLE_AFTER / 2)
    relay.run_once(clock.now())
    assert [m.schedule for m in pub.sent] == ["a", "b"] and store.backlog() == 0
    assert {f.outcome for f in store.history(None, 10)} == {Outcome.SENT}


def test_a_fire_recorded_elsewhere_is_claimed_within_idle_check(
    store: MemoryStore, clock: FakeClock
) -> None:
    pub = Recording()
    relay = relay_for(store, clock, pub=pub)
    wake = relay.run_once(clock.now())
    assert wake == clock.now() + IDLE_CHECK
    record_at(store, sched("t"), clock.now(), clock.now())  # `beatd trigger` in another process
    clock.advance(IDLE_CHECK.total_seconds())
    relay.run_once(clock.now())
    assert [m.schedule for m in pub.sent] == ["t"]


def test_a_crowded_instant_is_claimed_and_sent_once(store: MemoryStore, clock: FakeClock) -> None:
    for i in range(12_000):
        record_at(store, sched(f"s{i:05}"), T0, T0)
    pub = Recording()
    relay = relay_for(store, clock, pub=pub)
    relay.run_once(clock.now())
    relay.poke()
    relay.run_once(clock.now())
    assert len(pub.sent) == 12_000 == len({m.fire_id for m in pub.sent})
    assert pub.calls == 3  # 5,000 a call
    assert store.backlog() == 0


def test_a_new_term_claims_again_what_the_old_term_held(
    store: MemoryStore, clock: FakeClock
) -> None:
    at = T0 + timedelta(seconds=1)
    message = record_at(store, sched("a"), at, at)
    old = leading(store, clock, "old")
    gone = Recording()
    relay_for(store, clock, old, pub=gone).run_once(at - AHEAD / 2)  # claimed, then it died
    clock.advance(TTL.total_seconds() + 1)
    new = leading(store, clock, "new")
    pub = Recording()
    relay_for(store, clock, new, pub=pub).run_once(clock.now())
    assert gone.sent == [] and [m.fire_id for m in pub.sent] == [message.fire_id]
    assert store.history("a", 1)[0].outcome is Outcome.SENT


def test_a_fenced_claim_steps_down(store: MemoryStore, clock: FakeClock) -> None:
    record_at(store, sched("a"), T0, T0)
    leader = leading(store, clock, "old")
    store._leases[WHOLE] = Lease("new", 9, clock.now() + TTL, "someone")  # taken behind its back
    pub = Recording()
    assert relay_for(store, clock, leader, pub=pub).run_once(clock.now()) is None
    assert not leader.is_leading() and pub.calls == 0 and store.backlog() == 1


def test_a_term_that_ends_while_claiming_publishes_nothing(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Found by the partition SIGSTOP scenario: a process frozen right after its claim
    (fenced, so it passed) and resumed past its lease published what it had claimed,
    after the next holder had claimed it again and sent it: a duplicate with no crash."""
    message = record_at(store, sched("a"), T0, T0)
    leader = leading(store, clock, "old")
    claim = store.claim

    def frozen_after(*args: Any) -> list[Message]:
        claimed = claim(*args)
        clock.advance(TTL.total_seconds() + 1)  # SIGSTOP here, SIGCONT two leases later
        return claimed

    store.claim = frozen_after  # type: ignore[method-assign]
    pub = Recording()
    assert relay_for(store, clock, leader, pub=pub).run_once(clock.now()) is None
    assert pub.calls == 0 and store.backlog() == 1
    store.claim = claim  # type: ignore[method-assign]
    new = leading(store, clock, "new")
    again = Recording()
    relay_for(store, clock, new, pub=again).run_once(clock.now())
    assert [m.fire_id for m in again.sent] == [message.fire_id]  # the next term sends it once


def test_a_fire_confirmed_before_a_database_restart_is_marked_not_sent_again(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Found by the partition PostgreSQL-restart scenario: the relay published and saw
    the confirm, the database went down before the mark, the lease lapsed, and the same
    process took the next term and sent its own confirmed fire again."""
    message = record_at(store, sched("a"), T0, T0)
    leader = leading(store, clock)
    pub = Recording()
    relay = relay_for(store, clock, leader, pub=pub)
    mark_sent = store.mark_sent

    def down(*args: Any) -> None:
        raise StoreError("the database is restarting")

    store.mark_sent = down  # type: ignore[method-assign]
    with pytest.raises(StoreError):  # published, confirmed, then the mark failed
        relay.run_once(clock.now())
    assert len(pub.sent) == 1
    clock.advance(TTL.total_seconds() + 1)  # the lease lapsed meanwhile
    store.mark_sent = mark_sent  # type: ignore[method-assign]
    leader.step()  # the same process takes the next term
    assert leader.is_leading() and leader.lease is not None and leader.lease.epoch == 2
    drain(relay, clock, clock.now() + timedelta(seconds=2))
    assert [m.fire_id for m in pub.sent] == [message.fire_id]  # once
    assert store.history("a", 10)[0].outcome is Outcome.SENT
    assert store.backlog() == 0


# -- issue 11: the books balance under changes ---------------------------------


def ahead_of(store: MemoryStore, clock: FakeClock, *schedules: Schedule) -> tuple[Leader, Ticker]:
    """A leader whose tick records T0+10s two seconds ahead."""
    load(store, clock, *schedules)
    leader = leading(store, clock)
    return leader, Ticker(store, leader, build_message)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(leader: Leader, ticker: Ticker, relay: Relay, clock: FakeClock, when: datetime) -> None:
    clock.set(when)
    leader.step()
    ticker.tick(clock.now())
    relay.run_once(clock.now())


def test_a_replaced_fire_goes_out_as_its_new_definition(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Defect 1: the old relay held the old message and skipped the re-recorded one."""
    leader, ticker = ahead_of(store, clock, sched("a", 10))
    pub = Recording()
    relay = relay_for(store, clock, leader, pub=pub)
    ticker.on_recorded = relay.offer  # the relay caches what the tick recorded
    step(leader, ticker, relay, clock, at(8.1))  # T0+10s recorded ahead, cached as t.a
    assert store.backlog() == 1
    new = dataclasses.replace(sched("a", 10), task="t.new", source=Source.FILE)
    store.load_file([new], lambda s: timing.next_after(s, clock.now()))  # same timing
    for t in (8.2, 9.0, 9.5, 10.0, 10.1):
        step(leader, ticker, relay, clock, at(t))
    assert [(m.scheduled_for, m.headers["task"]) for m in pub.sent] == [(at(10), "t.new")]
    assert [(f.scheduled_for, f.outcome) for f in store.history("a", 5)] == [(at(10), Outcome.SENT)]


def test_a_change_that_loses_to_the_claim_leaves_the_fire_sent_as_sent(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Defect 2: a pause deleted the fire the relay was about to publish (no history row)."""
    leader, ticker = ahead_of(store, clock, sched("a", 10), sched("b", 10))
    pub = Recording()
    relay = relay_for(store, clock, leader, pub=pub)
    ticker.on_recorded = relay.offer
    step(leader, ticker, relay, clock, at(8.1))
    step(leader, ticker, relay, clock, at(10) - AHEAD / 2)  # both claimed: going out
    store.set_paused("a", True, "too late for T0+10s", None)
    store.set_paused("b", True, None, None)
    store.set_paused("b", False, None, timing.next_after(sched("b", 10), clock.now()))
    step(leader, ticker, relay, clock, at(10))
    step(leader, ticker, relay, clock, at(10.1))
    sent = {m.schedule: m.fire_id for m in pub.sent}
    assert sorted(sent) == ["a", "b"]
    for name, fid in sent.items():  # every message that left has its history row: sent
        (row,) = [f for f in store.history(name, 5) if f.fire_id == fid]
        assert row.outcome is Outcome.SENT


def test_a_change_before_the_claim_wins(store: MemoryStore, clock: FakeClock) -> None:
    leader, ticker = ahead_of(store, clock, sched("a", 10))
    pub = Recording()
    relay = relay_for(store, clock, leader, pub=pub)
    step(leader, ticker, relay, clock, at(8.1))
    store.set_paused("a", True, None, None)  # 1.9 s before the instant
    for t in (9.0, 9.5, 10.0, 10.5):
        step(leader, ticker, relay, clock, at(t))
    assert pub.sent == [] and store.history("a", 5) == [] and store.backlog() == 0


def test_confirmed_fires_stay_confirmed_until_marked_sent(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Defect 3: a failed mark_sent lost the confirmed ids; they were sent again much later."""
    leader = recorded(store, clock, sched("a"), sched("b"), seconds=1)
    failing = Flaky(store)
    pub = Recording()
    relay = Relay(failing, pub, clock, leader=leader)  # type: ignore[arg-type]
    real_mark = store.mark_sent

    def mark_sent_fails(fire_ids: Sequence[str], sent_at: datetime) -> None:
        raise StoreError("database unreachable")

    store.mark_sent = mark_sent_fails  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        relay.run_once(clock.now())
    assert len(pub.sent) == 2 and store.backlog() == 2
    store.mark_sent = real_mark  # type: ignore[method-assign]
    clock.advance(0.1)
    leader.step()
    relay.run_once(clock.now())
    assert store.backlog() == 0 and len(pub.sent) == 2  # marked, not sent again
    assert {f.outcome for f in store.history(None, 5)} == {Outcome.SENT}


def test_two_processes_sharing_an_instance_id_never_lead_at_one_epoch(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Defect 4: acquire kept the epoch for a matching holder name: both led at epoch 1."""
    a, b = Leader(store, clock, TTL, "host-1"), Leader(store, clock, TTL, "host-1")
    a.step()
    b.step()
    assert a.is_leading() and not b.is_leading()
    clock.advance(TTL.total_seconds() + 0.1)  # a froze; b takes over with a new epoch
    b.step()
    assert b.lease is not None and a.lease is None
    old = Lease("host-1", 1, clock.now() + TTL, a.token)
    with pytest.raises(Fenced):
        store.record(old, [], [])
    assert b.lease.epoch == 2


def test_a_trigger_is_never_withdrawn_nor_rewinds_the_schedule(
    store: MemoryStore, clock: FakeClock
) -> None:
    """A trigger's fire id is in history whatever change races with it."""
    load(store, clock, sched("x", 60))
    before = store.get("x").next_at
    trigger = record_at(store, sched("x", 60), at(1), at(1), manual=True)
    clock.set(at(0.5))  # the trigger's clock ran ahead of this change's
    store.set_paused("x", True, None, None)
    store.set_paused("x", False, None, before)
    same = dataclasses.replace(sched("x", 60), source=Source.FILE)
    store.load_file([same], lambda s: timing.next_after(s, clock.now()))
    assert [f.fire_id for f in store.history("x", 5)] == [trigger.fire_id]
    assert store.backlog() == 1
    assert store.get("x").next_at == before
