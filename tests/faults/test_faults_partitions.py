"""Partitions under faults: real `beatd run` processes sharing P = 8 on PostgreSQL + RabbitMQ.

Instances share eight partitions (each its own lease, 3 s) while eight
every-1s schedules, spread so that every partition has one, fire. The
faults: a random instance of three SIGKILLed and a new one started; a third
instance joining two and one leaving by SIGTERM (handovers, no duplicate at
all); a random instance SIGSTOPped past its lease and resumed (fenced per
partition); the PostgreSQL server restarted (BEATD_FAULTS_DISRUPT=1). The
books are the other scenarios' (faults_support.account): every instant of
every schedule recorded once and sent, every fire delivered, a duplicate
only of a fire delivered just before a kill or a stop.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime

import pytest
import sqlalchemy as sa
from faults_support import (
    DISRUPT,
    LEASE,
    LONG,
    PG_CLUSTER,
    Beatd,
    FaultCluster,
    Recorder,
    account,
    pg_ctl,
    pg_down_past_the_lease,
    pg_restart,
    running,
    seeded,
    stop_and_settle,
    wait_new_fires,
)

from beatd.model import Partition
from beatd.sharing import HANDOVER_AFTER

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
PARTITION = {name: index for index, name in enumerate(SCHEDULES)}  # _spread's order


def holders(cluster: FaultCluster) -> dict[int, tuple[str, int]]:
    return cluster.partition_holders(P)


def shared(cluster: FaultCluster) -> bool:
    """Every partition held, no live instance over its share ceil(P / live): 3, 3, 2 or 4, 4."""
    now = holders(cluster)
    live = cluster.live()
    counts = [sum(1 for holder, _ in now.values() if holder == b.holder) for b in live]
    return len(now) == P and max(counts) <= -(-P // len(live))


def taken_over(cluster: FaultCluster, gone: str, lost: list[int]) -> bool:
    """Every partition held again, none of `lost` by the killed instance."""
    now = holders(cluster)
    return len(now) == P and all(now[p][0] != gone for p in lost)


def joined(cluster: FaultCluster, beatd: Beatd) -> float | None:
    """The time.time() at which `beatd`'s roll call was first written, or None before."""
    query = sa.text("SELECT started_at FROM instances WHERE holder = :holder")
    with cluster.engine.connect() as conn:
        started: datetime | None = conn.execute(query, {"holder": beatd.holder}).scalar()
    return None if started is None else started.timestamp()


def first_fires(cluster: FaultCluster, after: dict[int, int]) -> dict[int, datetime]:
    """Partition -> when its first fire under an epoch later than `after[p]` was recorded."""
    found: dict[int, datetime] = {}
    for f in cluster.fires():
        index = PARTITION[f["schedule"]]
        if index in after and f["epoch"] > after[index]:
            decided: datetime = f["decided_at"]
            found[index] = min(found.get(index, decided), decided)
    return found


def fencing_problems(cluster: FaultCluster) -> list[str]:
    """Per partition: once a newer epoch recorded a fire, no older epoch recorded again,
    neither later in time nor for a later instant."""
    problems = []
    fires = cluster.fires()
    for name, index in PARTITION.items():
        rows = [f for f in fires if f["schedule"] == name]
        for key in ("decided_at", "scheduled_for"):
            epochs = [f["epoch"] for f in sorted(rows, key=lambda f, k=key: f[k])]
            if epochs != sorted(epochs):
                problems.append(f"partition {index}: an older epoch recorded after a newer one")
    return problems


def wait_fires_past(cluster: FaultCluster, seconds: int, what: str, timeout: float = 30) -> None:
    """Every schedule has a fire at least `seconds` past the database's now."""
    wait_new_fires(cluster, seconds, what, timeout, names=SCHEDULES)


def configured(cluster: FaultCluster) -> Recorder:
    """The partitioned config written, and a recorder on the cluster's queue."""
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s", extra=f"partitions = {P}")
    return Recorder(cluster.amqp_url, cluster.queue)


def start_sharing(cluster: FaultCluster, instances: int) -> None:
    """Start `instances` processes; wait until every partition is held and fires."""
    for _ in range(instances):
        cluster.start()
    cluster.wait_for(lambda: len(holders(cluster)) == P, 30, "every partition held")
    wait_fires_past(cluster, 2, "the first fires")


def test_sigkill_a_random_instance_of_three_sharing_eight_partitions(
    cluster: FaultCluster,
) -> None:
    rounds = 20 if LONG else 10
    rng = seeded("kill")
    crashes: list[float] = []
    recorder = configured(cluster)
    with running(cluster, recorder):
        start_sharing(cluster, INSTANCES)
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


def test_an_instance_joining_two_and_one_leaving_by_sigterm(cluster: FaultCluster) -> None:
    """Two instances share P = 8 (4, 4); a third joins and the partitions move to it by
    handover (3, 3, 2); a random one stops by SIGTERM and its partitions go to the other
    two at once. Again and again. Handovers and SIGTERM send nothing twice."""
    rounds = 8 if LONG else 3
    rng = seeded("leave")
    recorder = configured(cluster)
    rebalance = 2 * LEASE + HANDOVER_AFTER  # two leases + the handover delay
    with running(cluster, recorder):
        start_sharing(cluster, 2)
        for k in range(rounds):
            cluster.wait_for(lambda: shared(cluster), rebalance + 10, "two sharing (4, 4)")
            newcomer = cluster.start()
            came = cluster.wait_for(lambda b=newcomer: joined(cluster, b), 30, "the roll call")
            cluster.wait_for(lambda: shared(cluster), rebalance + 10, "three sharing (3, 3, 2)")
            took = time.time() - came
            print(f"round {k + 1}: pid {newcomer.proc.pid} has its share {took:.1f}s after joining")
            assert took <= rebalance, f"the share took {took:.1f}s (bound {rebalance:.0f}s)"
            wait_fires_past(cluster, 1, "fires after the handovers")
            leaver = rng.choice(cluster.live())
            before = holders(cluster)
            moved = {p: epoch for p, (holder, epoch) in before.items() if holder == leaver.holder}
            leaver.signal(signal.SIGTERM)
            left = time.time()
            assert leaver.wait(30) == 0
            cluster.wait_for(
                lambda m=moved: len(first_fires(cluster, m)) == len(m),
                LEASE + 10,
                "a fire of every moved partition on another instance",
            )
            firsts = first_fires(cluster, moved)
            after = {p: first.timestamp() - left for p, first in firsts.items()}
            print(
                f"round {k + 1}: pid {leaver.proc.pid} left; first fires of its partitions "
                + ", ".join(f"{p}: {s:.1f}s" for p, s in sorted(after.items()))
            )
            assert all(holder != leaver.holder for holder, _ in holders(cluster).values())
            assert max(after.values()) <= LEASE + 1, f"moved too slowly after SIGTERM: {after}"
            wait_fires_past(cluster, 1, "fires after the SIGTERM")
        stop_and_settle(cluster, recorder)
    problems = fencing_problems(cluster)
    books = account(
        cluster,
        recorder,
        f"join 3rd + SIGTERM, P = {P}",
        faults=2 * rounds,
        record_late=2.5,
        deliver_late=3,
        crashes=[],  # no duplicate at all
        schedules=tuple(SCHEDULES),
    )
    assert not problems, problems
    assert not books.problems


def test_sigstop_a_random_instance_of_three_past_the_lease_is_fenced(
    cluster: FaultCluster,
) -> None:
    """A random instance of three frozen for two leases: the others take its partitions;
    resumed, it records nothing under its old epochs, then gets its share back."""
    rounds = 8 if LONG else 3
    rng = seeded("stop")
    stops: list[float] = []
    recorder = configured(cluster)
    with running(cluster, recorder):
        start_sharing(cluster, INSTANCES)
        for k in range(rounds):
            cluster.wait_for(lambda: shared(cluster), 4 * LEASE + 10, "the partitions shared")
            victim = rng.choice(cluster.live())
            lost = sorted(p for p, (h, _) in holders(cluster).items() if h == victim.holder)
            victim.signal(signal.SIGSTOP)
            stops.append(time.time())
            stopped = time.monotonic()
            print(f"stop {k + 1} at {stops[-1] % 60:.3f}: pid {victim.proc.pid} holding {lost}")
            try:
                cluster.wait_for(
                    lambda gone=victim.holder, lost=lost: taken_over(cluster, gone, lost),
                    2 * LEASE + 10,
                    "the stopped instance's partitions taken over",
                )
                wait_fires_past(cluster, 1, "fires after the takeover")
                cluster.wait_for(  # the fault's own length: stopped for two leases
                    lambda t=stopped: time.monotonic() - t >= 2 * LEASE, 2 * LEASE, "two leases"
                )
            finally:
                victim.signal(signal.SIGCONT)
            wait_fires_past(cluster, 2, "fires after the stopped instance resumed")
            assert victim.proc.poll() is None, "the resumed instance died"
        stop_and_settle(cluster, recorder)
    problems = fencing_problems(cluster)
    books = account(
        cluster,
        recorder,
        f"SIGSTOP 1 of {INSTANCES}, P = {P}",
        faults=rounds,
        record_late=LEASE + 4,
        deliver_late=LEASE + 6,
        max_duplicates=10 * rounds,
        crashes=stops,
        schedules=tuple(SCHEDULES),
    )
    assert not problems, problems
    assert not books.problems


@pytest.mark.skipif(
    not (DISRUPT or PG_CLUSTER),
    reason="restarts the shared PostgreSQL: set BEATD_FAULTS_DISRUPT=1 (or a private cluster)",
)
def test_postgres_restart_under_three_instances_sharing_eight_partitions(
    restart_cluster: FaultCluster,
) -> None:
    """The server restarted under three instances holding eight leases; with BEATD_LONG=1
    also down for two leases (every lease self-fences, all are taken again)."""
    cluster = restart_cluster
    crashes: list[float] = []
    recorder = configured(cluster)
    with running(cluster, recorder):
        for _ in range(INSTANCES):
            cluster.start()
        cluster.wait_for(lambda: shared(cluster), 4 * LEASE + 30, "the partitions shared")
        wait_fires_past(cluster, 2, "the first fires")
        try:
            pg_restart(crashes)
            wait_fires_past(cluster, 3, "fires after the restart", timeout=60)
            if LONG:
                pg_down_past_the_lease(cluster, crashes)
        finally:
            pg_ctl("start", check=False)
        wait_fires_past(cluster, 3, "fires after the database came back", timeout=60)
        cluster.wait_for(lambda: shared(cluster), 4 * LEASE + 10, "the partitions shared again")
        assert len(cluster.live()) == INSTANCES, "an instance died"
        stop_and_settle(cluster, recorder)
    books = account(
        cluster,
        recorder,
        f"PG restart{' + down 2x lease' if LONG else ''}, P = {P}",
        faults=1 + LONG,
        record_late=LEASE * 2 + 15,
        deliver_late=LEASE * 2 + 20,
        max_duplicates=20 * (1 + LONG),
        crashes=crashes,
        schedules=tuple(SCHEDULES),
    )
    assert not fencing_problems(cluster)
    assert not books.problems
