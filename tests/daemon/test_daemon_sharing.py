"""How instances share partitions (sharing.py), at fixed times over the memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from beatd.clock import FakeClock
from beatd.sharing import HANDOVER_AFTER, Crew, preference, share
from beatd.store.memory import MemoryStore

TTL = timedelta(seconds=3)
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("count", "live", "expected"),
    [(1, 1, 1), (8, 1, 8), (8, 2, 4), (8, 3, 3), (8, 9, 1), (1024, 7, 147)],
    ids=["one", "alone", "halves", "thirds-rounded-up", "more-instances-than-partitions", "big"],
)
def test_share_is_ceil_of_partitions_over_instances(count: int, live: int, expected: int) -> None:
    assert share(count, live) == expected


def test_preference_puts_an_instances_own_stripe_first() -> None:
    assert preference(8, 0, 3) == [0, 3, 6, 1, 2, 4, 5, 7]
    assert preference(8, 2, 3) == [2, 5, 0, 1, 3, 4, 6, 7]
    assert preference(4, 0, 1) == [0, 1, 2, 3]


def indexes(crew: Crew) -> list[int]:
    return [x.partition.index for x in crew.held()]


def run(clock: FakeClock, seconds: float, *crews: Crew) -> None:
    """Step each crew every half second for `seconds`, as the lease loop would."""
    for _ in range(int(seconds / 0.5)):
        clock.advance(0.5)
        for crew in crews:
            crew.step()


def test_a_joining_instance_gets_its_share_after_a_clean_handover() -> None:
    clock = FakeClock(T0)
    store = MemoryStore(clock)
    a = Crew(store, clock, TTL, 4, "a")
    a.step()
    assert indexes(a) == [0, 1, 2, 3]  # alone: everything
    clock.advance(0.1)
    b = Crew(store, clock, TTL, 4, "b")
    b.step()
    assert indexes(b) == [] and b.share == 2  # nothing free yet
    a.step()
    assert a.share == 2 and not any(x.handing_over for x in a.leaders)  # not at once: no thrash
    run(clock, HANDOVER_AFTER - 0.5, a, b)
    assert not any(x.handing_over for x in a.leaders)
    run(clock, 0.5, a)
    handing = [x.partition.index for x in a.leaders if x.handing_over]
    assert handing == [1, 3]  # b's stripe (rank 1 of 2): the least preferred of a's
    assert indexes(a) == [0, 1, 2, 3]  # still held, while the relay drains them
    for leader in a.leaders:
        if leader.handing_over:
            a.drained(leader)  # what the daemon's relay loop says once they are published
    a.step()
    assert indexes(a) == [0, 2]
    b.step()
    assert indexes(b) == [1, 3]
    run(clock, 2 * HANDOVER_AFTER, a, b)
    assert (indexes(a), indexes(b)) == ([0, 2], [1, 3])  # settled: nobody hands over again


def test_a_dead_instances_partitions_are_taken_within_two_leases() -> None:
    clock = FakeClock(T0)
    store = MemoryStore(clock)
    a, b = Crew(store, clock, TTL, 4, "a"), Crew(store, clock, TTL, 4, "b")
    a.step()
    clock.advance(0.1)  # b is the younger: rank 1
    b.step()
    run(clock, HANDOVER_AFTER + 0.5, a, b)
    for leader in a.leaders:
        if leader.handing_over:
            a.drained(leader)
    a.step()
    b.step()
    assert (indexes(a), indexes(b)) == ([0, 2], [1, 3])
    # b dies: it neither renews nor writes its roll call.
    waited = 0.0
    while indexes(a) != [0, 1, 2, 3]:
        clock.advance(0.5)
        waited += 0.5
        a.step()
        assert waited <= 2 * TTL.total_seconds()
    assert a.share == 4


def test_sigterm_releases_every_partition_and_leaves_the_roll_call() -> None:
    clock = FakeClock(T0)
    store = MemoryStore(clock)
    a = Crew(store, clock, TTL, 4, "a")
    a.step()
    assert len(store.leases()) == 4 and len(store.instances(T0)) == 1
    a.release()
    assert store.leases() == [] and store.instances(T0) == []


def test_a_partition_stepped_down_from_is_taken_back_at_once_at_a_new_epoch() -> None:
    clock = FakeClock(T0)
    store = MemoryStore(clock)
    a = Crew(store, clock, TTL, 4, "a")
    a.step()
    leader = a.leaders[2]
    held = leader.lease
    assert held is not None
    leader.step_down()  # e.g. a write was Fenced; the row still names this process
    clock.advance(0.1)
    a.step()
    again = leader.lease
    assert again is not None and again.epoch > held.epoch
