"""Partitions under faults: real `beatd run` processes sharing P = 8 on PostgreSQL + RabbitMQ.

Three instances share eight partitions (each its own lease, 3 s) while
eight every-1s schedules, spread so that every partition has one, fire;
a random instance is SIGKILLed and a new one started, again and again. The
books are the other scenarios' (faults_support.account): every instant of
every schedule recorded once and sent, every fire delivered, a duplicate
only of a fire delivered just before a kill.
"""

from __future__ import annotations

import random
import time
from datetime import datetime

import pytest
import sqlalchemy as sa
from faults_support import (
    LEASE,
    LONG,
    SECOND,
    FaultCluster,
    Recorder,
    account,
    running,
    stop_and_settle,
)

from beatd.model import Partition

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.faults]

P = 8
INSTANCES = 3


def _spread() -> dict[str, dict[str, str]]:
    """One every-1s schedule per partition: the first name of each."""
    names: dict[int, str] = {}
    i = 0
    while len(names) < P:
        name = f"job-{i}"
        names.setdefault(next(p.index for p in Partition.all(P) if p.owns(name)), name)
        i += 1
    options = {"every": "1s", "misfire": "all", "task": "app.tasks.job"}
    return {names[index]: options for index in sorted(names)}


SCHEDULES = _spread()


def holders(cluster: FaultCluster) -> dict[int, tuple[str, int]]:
    """Partition -> (holder, epoch) of every live partition lease, by the database clock."""
    query = sa.text(
        "SELECT name, holder, epoch FROM lease WHERE name LIKE :names AND expires_at > now()"
    )
    with cluster.engine.connect() as conn:
        rows = conn.execute(query, {"names": f"partition %/{P}"}).all()
    found = {}
    for name, holder, epoch in rows:
        partition = Partition.named(name)
        assert partition is not None
        found[partition.index] = (holder, int(epoch))
    return found


def shared(cluster: FaultCluster) -> bool:
    """Every partition held, each live instance holding its share or one less (3, 3, 2)."""
    now = holders(cluster)
    counts = sorted(
        sum(1 for holder, _ in now.values() if holder == b.holder) for b in cluster.live()
    )
    return len(now) == P and counts == [2, 3, 3]


def taken_over(cluster: FaultCluster, gone: str, lost: list[int]) -> bool:
    """Every partition held again, none of `lost` by the killed instance."""
    now = holders(cluster)
    return len(now) == P and all(now[p][0] != gone for p in lost)


def wait_fires_past(cluster: FaultCluster, seconds: int, what: str, timeout: float = 30) -> None:
    """Every schedule has a fire at least `seconds` past the database's now."""
    with cluster.engine.connect() as conn:
        target: datetime = conn.execute(sa.text("SELECT now()")).scalar_one() + seconds * SECOND

    def done() -> bool:
        latest: dict[str, datetime] = {}
        for f in cluster.fires():
            latest[f["schedule"]] = f["scheduled_for"]
        return all(latest.get(name, target - SECOND) >= target for name in SCHEDULES)

    cluster.wait_for(done, timeout, what)


def test_sigkill_a_random_instance_of_three_sharing_eight_partitions(
    cluster: FaultCluster,
) -> None:
    rounds = 20 if LONG else 10
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    print(f"kill seed {seed}")
    crashes: list[float] = []
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s", extra=f"partitions = {P}")
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    with running(cluster, recorder):
        for _ in range(INSTANCES):
            cluster.start()
        cluster.wait_for(lambda: len(holders(cluster)) == P, 30, "every partition held")
        wait_fires_past(cluster, 2, "the first fires")
        for k in range(rounds):
            # Each round starts shared out (the newcomer took its share by handovers), so
            # every kill takes partitions with it.
            cluster.wait_for(lambda: shared(cluster), 4 * LEASE + 10, "the partitions shared")
            victim = rng.choice(cluster.live())
            if k % 2:
                recorder.arrived.clear()
                recorder.arrived.wait(3)  # a delivery: someone is confirming or marking
            else:
                time.sleep(rng.uniform(0, 1))  # the fault's own timing, not a wait for a state
            before = holders(cluster)
            lost = sorted(p for p, (holder, _) in before.items() if holder == victim.holder)
            victim.kill()
            crashes.append(time.time())
            print(f"kill {k + 1}: pid {victim.proc.pid} holding partitions {lost}")
            cluster.start()  # keep three instances
            cluster.wait_for(
                lambda gone=victim.holder, lost=lost: taken_over(cluster, gone, lost),
                2 * LEASE + 10,
                "the victim's partitions taken over",
            )
            wait_fires_past(cluster, 1, "fires after the takeover")
        stop_and_settle(cluster, recorder)
    books = account(
        cluster,
        recorder,
        f"SIGKILL 1 of {INSTANCES}, P = {P}",
        faults=rounds,
        record_late=LEASE + 4,
        deliver_late=LEASE + 6,
        max_duplicates=10 * rounds,
        crashes=crashes,
        schedules=tuple(SCHEDULES),
    )
    assert not books.problems
    assert books.epochs >= P  # every partition decided under its own terms
