"""Partitions over memory, SQLite and PostgreSQL: the bucket filter, one lease per partition.

Partition p of P owns the schedules whose bucket (a crc32 of the name) is p
modulo P; each has its own lease, epoch and fencing; and a lease of another
partitioning (instances started with another `partitions`) keeps a new one
from being taken, so no schedule is ever decided under two leases.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from store_helpers import Backend, sched
from test_store_contract import at, pending

from beatd.errors import Fenced
from beatd.model import BUCKETS, WHOLE, Advance, Partition, bucket
from beatd.store.base import Store

TTL = timedelta(seconds=30)
NAMES = [f"job-{i}" for i in range(40)]
FOUR = Partition.all(4)


def owner(name: str, partitions: tuple[Partition, ...]) -> Partition:
    return next(p for p in partitions if p.owns(name))


def put_all(store: Store) -> None:
    for i, name in enumerate(NAMES):
        store.put(sched(name), at(i / 100), replace=False)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a", 3651), ("nightly-report", 688), ("job-0", 2729), ("ünïcode", 1194)],
    ids=["short", "dashed", "numbered", "non-ascii"],
)
def test_bucket_is_a_stable_crc32_of_the_name(name: str, expected: int) -> None:
    assert bucket(name) == expected < BUCKETS  # never Python's hash: the same in every process


def test_partition_names_and_ownership() -> None:
    assert WHOLE.lease_name == "leader" and WHOLE.whole and WHOLE.owns("anything")
    assert Partition(3, 8).lease_name == "partition 3/8"
    assert Partition.named("partition 3/8") == Partition(3, 8)
    assert Partition.named("leader") == WHOLE
    assert Partition.named("partition 8/8") is None
    assert Partition.named("something else") is None
    assert all(sum(p.owns(n) for p in FOUR) == 1 for n in NAMES)


def test_due_next_due_at_and_due_count_follow_the_partition(store: Store) -> None:
    put_all(store)
    everything = [s.schedule.name for s in store.due(at(1), 100)]
    assert sorted(everything) == sorted(NAMES)
    seen: list[str] = []
    for p in FOUR:
        mine = [s.schedule.name for s in store.due(at(1), 100, p)]
        assert mine and all(owner(n, FOUR) == p for n in mine)
        assert store.due_count(at(1), 100, p) == len(mine)
        assert store.next_due_at(p) == store.get(mine[0]).next_at
        seen += mine
    assert sorted(seen) == sorted(NAMES)  # every schedule in exactly one partition
    assert store.due_count(at(1), 100) == len(NAMES)  # P = 1: no filter
    assert store.next_due_at() == at(0)


def test_each_partition_has_its_own_lease_and_epoch(backend: Backend) -> None:
    store = backend.store
    zero = store.acquire("a", TTL, "a", FOUR[0])
    one = store.acquire("b", backend.short_ttl, "b", FOUR[1])
    assert zero is not None and one is not None
    assert (zero.partition, one.partition) == (FOUR[0], FOUR[1])
    assert one.epoch > zero.epoch  # epochs only grow, across every partition
    assert store.acquire("c", TTL, "c", FOUR[0]) is None  # held by a
    assert store.current(FOUR[1]) == one and store.current(FOUR[2]) is None
    assert [x.partition for x in store.leases()] == [FOUR[0], FOUR[1]]
    backend.expire(one)
    assert store.renew(one, TTL) is None  # partition 1 lapsed ...
    assert store.renew(zero, TTL) is not None  # ... partition 0 did not
    taken = store.acquire("c", TTL, "c", FOUR[1])
    assert taken is not None and taken.epoch > one.epoch
    store.release(taken)
    assert [x.partition for x in store.leases()] == [FOUR[0]]


def test_writes_are_fenced_by_their_own_partitions_lease(backend: Backend) -> None:
    store = backend.store
    put_all(store)
    name = NAMES[0]
    mine = owner(name, FOUR)
    other = next(p for p in FOUR if p != mine)
    held = store.acquire("a", backend.short_ttl, "a", mine)
    elsewhere = store.acquire("b", TTL, "b", other)
    assert held is not None and elsewhere is not None
    version = store.get(name).version
    advance = Advance(name, version, at(2), at(1), 1)
    assert store.record(held, [pending(name, at(1))], [advance]) == [pending(name, at(1)).fire_id]
    assert store.next_publish_at(held.epoch, mine) == at(1)
    assert store.next_publish_at(elsewhere.epoch, other) is None  # not its outbox rows
    assert store.claim(elsewhere, at(5), 10) == []
    assert [m.schedule for m in store.claim(held, at(5), 10)] == [name]
    backend.expire(held)
    with pytest.raises(Fenced):
        store.record(held, [pending(name, at(2))], [])
    with pytest.raises(Fenced):
        store.claim(held, at(5), 10)
    store.record(elsewhere, [], [])  # the other partition's lease is unaffected


def test_a_lease_of_another_partitioning_blocks_taking_one(backend: Backend) -> None:
    """Instances started with P = 4 and P = 1 at once: the later waits for the earlier."""
    store = backend.store
    four = store.acquire("four", backend.short_ttl, "four", FOUR[2])
    assert four is not None
    assert store.acquire("one", TTL, "one") is None  # P = 1 while a P = 4 lease is held
    assert store.acquire("eight", TTL, "eight", Partition(2, 8)) is None
    assert store.acquire("four-b", TTL, "four-b", FOUR[3]) is not None  # same P: fine
    backend.expire(four)
    assert store.acquire("one", TTL, "one") is None  # FOUR[3] is still held
    assert store.leases()[0].partition == FOUR[3]


def test_changing_p_never_records_a_fire_twice(backend: Backend) -> None:
    """P = 4, then (every instance restarted) P = 2: the same instant is skipped, once sent."""
    store = backend.store
    put_all(store)
    name = NAMES[5]
    four = store.acquire("a", backend.short_ttl, "a", owner(name, FOUR))
    assert four is not None
    store.record(four, [pending(name, at(1))], [])
    assert [m.schedule for m in store.claim(four, at(5), 10)] == [name]  # ... then killed
    backend.expire(four)
    two = Partition.all(2)
    again = store.acquire("b", TTL, "b", owner(name, two))
    assert again is not None and again.epoch > four.epoch
    assert store.record(again, [pending(name, at(1))], []) == []  # (schedule, instant) is unique
    # The fire claimed by the killed P = 4 term is claimed again by the new term.
    assert [m.schedule for m in store.claim(again, at(5), 10)] == [name]
    store.mark_sent([pending(name, at(1)).fire_id], at(1))
    assert [r.scheduled_for for r in store.history(name, 10)] == [at(1)]
    assert store.backlog() == 0


def test_a_trigger_recorded_without_a_lease_goes_to_its_partitions_relay(
    backend: Backend,
) -> None:
    """Triggers and backfills record with no lease: the bucket still says whose it is."""
    store = backend.store
    put_all(store)
    name = NAMES[7]
    leases = [store.acquire(f"h{p.index}", TTL, f"h{p.index}", p) for p in FOUR]
    assert store.record(None, [pending(name, at(1))], []) == [pending(name, at(1)).fire_id]
    got = {}
    for lease in leases:
        assert lease is not None
        got[lease.partition] = [m.schedule for m in store.claim(lease, at(5), 10)]
    assert got == {p: [name] if p == owner(name, FOUR) else [] for p in FOUR}


def test_backlogs_count_each_partitions_unsent_fires_in_one_read(store: Store) -> None:
    """What the daemon's per-partition `beatd_backlog` reads: the outbox by bucket % P."""
    put_all(store)
    names = NAMES[:12]
    store.record(None, [pending(n, at(1)) for n in names], [])
    expected = [sum(p.owns(n) for n in names) for p in FOUR]
    assert sorted(expected)[-2] > 0  # at least two partitions have fires: a real split
    assert store.backlogs(4) == expected
    assert store.backlogs(1) == [store.backlog()] == [12]
    store.mark_sent([pending(names[0], at(1)).fire_id], at(1))
    expected[owner(names[0], FOUR).index] -= 1
    assert store.backlogs(4) == expected
    assert store.backlogs(3) == [sum(bucket(n) % 3 == i for n in names[1:]) for i in range(3)]
