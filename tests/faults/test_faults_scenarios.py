"""Fault injection with real `beatd run` processes, PostgreSQL and RabbitMQ.

Every scenario runs several instances on two second-granularity schedules
(`every = "1s"` and the 6-field cron `* * * * * *`, both `misfire = "all"`,
lease 3 s) while a consumer records every message, injects its faults, stops
the processes with SIGTERM and checks the books (faults_support.account):
each instant of the window recorded exactly once and sent, every fire
delivered, duplicates only of already-seen ids, lateness bounded. Each prints
its accounting table.

The RabbitMQ outage and the PostgreSQL restart stop shared services: they
restore them in a `finally`. BEATD_LONG=1 runs the long variants.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from faults_support import (
    DISRUPT,
    LEASE,
    LONG,
    PG_CLUSTER,
    SCHEDULES,
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

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.faults]


def _failover(cluster: FaultCluster, epoch: int, timeout: float = LEASE + 10) -> int:
    """Wait for a live lease with a newer epoch; returns it."""
    lease = cluster.wait_for(
        lambda: (lease := cluster.lease()) and lease.live and lease.epoch > epoch and lease,
        timeout,
        f"a leader with an epoch after {epoch}",
        step=0.05,
    )
    return lease.epoch


def test_leader_sigkill_repeatedly_at_random_points(cluster: FaultCluster) -> None:
    """Half the kills land at a random instant, half right after a delivery: the
    window between the broker's confirm and the commit that marks the fire sent."""
    kills = 12 if LONG else 4
    rng = seeded("kill timing")
    crashes: list[float] = []
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s")
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    with running(cluster, recorder):
        for _ in range(3):
            cluster.start()
        cluster.wait_for(cluster.leader, 30, "a leader")
        wait_new_fires(cluster, 2, "the first fires", timeout=30)
        for k in range(kills):
            leader = cluster.wait_for(cluster.leader, LEASE + 10, "a leader")
            lease = cluster.lease()
            assert lease is not None
            if k % 2:
                recorder.arrived.clear()
                recorder.arrived.wait(3)  # a delivery: the leader is confirming or marking
            else:
                time.sleep(rng.uniform(0, 1))  # the fault's own timing, not a wait for a state
            leader.kill()
            crashes.append(time.time())
            how = "after a delivery" if k % 2 else "at random"
            print(f"kill {k + 1} {how} at second {time.time() % 60:.3f}, epoch {lease.epoch}")
            cluster.start()  # keep three instances
            _failover(cluster, lease.epoch)
            wait_new_fires(cluster, 1, "fires by the new leader")
        stop_and_settle(cluster, recorder)
    books = account(
        cluster,
        recorder,
        "leader SIGKILL",
        faults=kills,
        record_late=LEASE + 3,
        deliver_late=LEASE + 5,
        max_duplicates=10 * kills,  # at most a relay batch in flight per kill ...
        crashes=crashes,  # ... and only one that reached the queue just before a kill
    )
    assert not books.problems
    assert books.epochs == kills + 1


def test_leader_sigstop_past_the_lease_is_fenced(cluster: FaultCluster) -> None:
    rounds = 4 if LONG else 2
    crashes: list[float] = []
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s")
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    with running(cluster, recorder):
        for _ in range(2):
            cluster.start()
        cluster.wait_for(cluster.leader, 30, "a leader")
        wait_new_fires(cluster, 2, "the first fires", timeout=30)
        for _ in range(rounds):
            leader = cluster.wait_for(cluster.leader, LEASE + 10, "a leader")
            old = cluster.lease()
            assert old is not None
            leader.signal(signal.SIGSTOP)
            crashes.append(time.time())
            try:
                _failover(cluster, old.epoch)
                wait_new_fires(cluster, 2, "fires by the new leader")
            finally:
                leader.signal(signal.SIGCONT)
            wait_new_fires(cluster, 3, "fires after the stopped leader resumed")
            assert leader.proc.poll() is None, "the resumed leader died"
        stop_and_settle(cluster, recorder)
    # Once a newer epoch recorded a fire, no older epoch ever recorded again.
    epochs = [epoch for _, epoch in cluster.epochs_by_decided()]
    assert epochs == sorted(epochs), "a fenced leader recorded after its successor"
    books = account(
        cluster,
        recorder,
        "leader SIGSTOP/SIGCONT",
        faults=rounds,
        record_late=LEASE + 3,
        deliver_late=LEASE + 5,
        max_duplicates=10 * rounds,
        crashes=crashes,
    )
    assert not books.problems
    assert books.epochs == rounds + 1


def _waiting(cluster: FaultCluster, query: str) -> int:
    """Sessions of this database waiting on a lock in `query` (a fresh stats snapshot)."""
    with cluster.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE :q"
                ),
                {"q": query},
            ).scalar_one()
        )


@pytest.mark.parametrize("table", ["fires", "outbox"])  # two statements of the transaction
def test_leader_frozen_inside_its_fenced_transaction_does_not_stall_the_cluster(
    cluster: FaultCluster, table: str
) -> None:
    """The worst moment to freeze: inside the record transaction, holding the lease
    row lock that every takeover waits for. Made deterministic by holding a table
    lock until the leader's insert into it waits, stopping the leader, then letting
    go: its session sits in the transaction, lock held, client frozen. The server
    must end that session so a standby takes over within a bound, and the frozen
    leader, resumed, must record nothing more."""
    crashes: list[float] = []
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s")
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    with running(cluster, recorder):
        for _ in range(2):
            cluster.start()
        leader = cluster.wait_for(cluster.leader, 30, "a leader")
        wait_new_fires(cluster, 2, "the first fires", timeout=30)
        old = cluster.lease()
        assert old is not None
        with cluster.engine.connect() as blocker:
            tx = blocker.begin()
            blocker.execute(sa.text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))
            cluster.wait_for(
                lambda: _waiting(cluster, f"INSERT INTO {table}%"),
                10,
                "the leader blocked inside its record transaction",
            )
            leader.signal(signal.SIGSTOP)
            crashes.append(time.time())
            tx.rollback()
        try:
            stalled = time.monotonic()
            _failover(cluster, old.epoch, timeout=LEASE + 15)
            took = time.monotonic() - stalled
            print(f"takeover {took:.1f}s after the leader froze holding the lease row")
            wait_new_fires(cluster, 3, "fires by the new leader")
        finally:
            leader.signal(signal.SIGCONT)
        wait_new_fires(cluster, 3, "fires after the frozen leader resumed")
        assert leader.proc.poll() is None, "the resumed leader died"
        stop_and_settle(cluster, recorder)
    epochs = [epoch for _, epoch in cluster.epochs_by_decided()]
    assert epochs == sorted(epochs), "a fenced leader recorded after its successor"
    books = account(
        cluster,
        recorder,
        f"frozen in txn ({table})",
        faults=1,
        record_late=LEASE + 15,
        deliver_late=LEASE + 16,
        max_duplicates=10,
        crashes=crashes,
    )
    assert not books.problems
    assert books.epochs == 2


def test_postgres_connections_killed(cluster: FaultCluster) -> None:
    rounds = 15 if LONG else 5
    crashes: list[float] = []
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s")
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    killed = 0
    with running(cluster, recorder):
        for _ in range(3):
            cluster.start()
        cluster.wait_for(cluster.leader, 30, "a leader")
        wait_new_fires(cluster, 2, "the first fires", timeout=30)
        for _ in range(rounds):
            killed += cluster.terminate_connections()
            crashes.append(time.time())
            wait_new_fires(cluster, 2, "fires after the connections were killed")
        assert len(cluster.live()) == 3, "an instance died"
        stop_and_settle(cluster, recorder)
    print(f"{killed} PostgreSQL connections terminated in {rounds} rounds")
    books = account(
        cluster,
        recorder,
        "PG pg_terminate_backend",
        faults=rounds,
        record_late=LEASE + 3,
        deliver_late=LEASE + 5,
        max_duplicates=10 * rounds,
        crashes=crashes,
    )
    assert not books.problems


def test_sighup_with_a_broken_file_keeps_the_last_good_schedules(cluster: FaultCluster) -> None:
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s")
    good = cluster.config.read_text()
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    with running(cluster, recorder):
        procs = [cluster.start() for _ in range(2)]
        cluster.wait_for(cluster.leader, 30, "a leader")
        wait_new_fires(cluster, 2, "the first fires", timeout=30)
        broken = {
            "syntax": (good + "[schedules.broken\n", 1),
            "values": (good + '[schedules.bad]\ncron = "61 * * * *"\ntimezone = "Mars/Base"\n', 3),
        }
        for kind, (text, problems) in broken.items():
            cluster.config.write_text(text)
            marks = [len(b.log_lines()) for b in procs]
            for beatd in procs:
                beatd.signal(signal.SIGHUP)
            for beatd, mark in zip(procs, marks, strict=True):
                errors = cluster.wait_for(
                    lambda b=beatd, m=mark: [
                        line for line in b.log_lines()[m:] if '"level": "error"' in line
                    ],
                    10,
                    f"the {kind} reload error",
                )
                wait_new_fires(cluster, 2, f"fires after the {kind} reload")
                errors = [line for line in beatd.log_lines()[mark:] if '"level": "error"' in line]
                assert len(errors) == 1, errors
                message = json.loads(errors[0])["msg"]
                assert message.startswith("reload failed, keeping the last good schedules:")
                assert "\n" not in message and "Traceback" not in message
                if problems > 1:
                    assert f"(and {problems - 1} more problems)" in message, message
                else:
                    assert "beatd.toml:" in message  # names the file and line
            assert cluster.schedule_names() == sorted(SCHEDULES)
        cluster.config.write_text(good + '[schedules.late]\nevery = "1h"\ntask = "t.late"\n')
        for beatd in procs:
            beatd.signal(signal.SIGHUP)
        cluster.wait_for(
            lambda: cluster.schedule_names() == sorted([*SCHEDULES, "late"]),
            10,
            "the good file after the broken ones",
        )
        wait_new_fires(cluster, 2, "fires after the good reload")
        stop_and_settle(cluster, recorder)
    books = account(cluster, recorder, "SIGHUP broken TOML", faults=2, deliver_late=3)
    assert not books.problems


def test_ten_instances_start_at_once_on_an_empty_database(empty_cluster: FaultCluster) -> None:
    cluster = empty_cluster
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s")
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    with running(cluster, recorder):
        procs = [cluster.start(upgrade=True) for _ in range(10)]
        cluster.wait_for(cluster.leader, 90, "a leader")
        # every instance past its upgrade and running (signal handlers installed)
        cluster.wait_for(
            lambda: all('"msg": "started"' in "".join(b.log_lines()) for b in procs),
            90,
            "all ten instances to start",
            step=0.2,
        )
        wait_new_fires(cluster, 3, "the first fires", timeout=60)
        assert len(cluster.live()) == 10
        stop_and_settle(cluster, recorder)
    outputs = [cluster.stdout_of(b) for b in procs]
    upgraded = [o for o in outputs if "schema upgraded from revision (empty)" in o]
    current = [o for o in outputs if "schema is up to date" in o]
    assert (len(upgraded), len(current)) == (1, 9), outputs
    with cluster.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    errors = {b.proc.pid: cluster.error_lines(b) for b in procs}
    assert not any(errors.values()), errors
    books = account(cluster, recorder, "10 instances, empty DB", faults=0, deliver_late=3)
    assert not books.problems
    assert books.epochs == 1


def test_clock_jumps_change_neither_leader_nor_instants(
    cluster: FaultCluster, tmp_path: Path
) -> None:
    """Lease expiry and fire decisions follow the database clock: an instance whose
    wall clock jumps hours either way neither takes the lease as a standby nor
    moves, drops or doubles an instant once it leads."""
    offset = tmp_path / "clock-offset"
    offset.write_text("0")
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s")
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    jumps = ["3600", "-3600", "86400", "-7200"] if LONG else ["3600", "-3600"]
    with running(cluster, recorder):
        leader = cluster.start()
        cluster.wait_for(cluster.leader, 30, "a leader")
        skewed = cluster.start({"BEATD_TEST_CLOCK_OFFSET_FILE": str(offset)})
        wait_new_fires(cluster, 2, "the first fires", timeout=30)
        first = cluster.lease()
        assert first is not None
        for jump in jumps:  # the skewed instance is a standby
            offset.write_text(jump)
            wait_new_fires(cluster, 3, f"fires with a standby {jump}s off")
            lease = cluster.lease()
            assert lease is not None
            assert (lease.holder, lease.epoch) == (leader.holder, first.epoch)
        leader.signal(signal.SIGTERM)  # the skewed instance takes over
        assert leader.wait(30) == 0
        cluster.wait_for(lambda: cluster.leader() is skewed, LEASE + 10, "the skewed leader")
        for jump in jumps:  # ... and its clock keeps jumping while it leads
            offset.write_text(jump)
            wait_new_fires(cluster, 3, f"fires from a leader {jump}s off")
        assert any("test clock" in line for line in skewed.log_lines())
        stop_and_settle(cluster, recorder)
    books = account(cluster, recorder, "clock jumps", faults=2 * len(jumps), deliver_late=3)
    assert not books.problems
    assert books.epochs == 2


def _rabbitmqctl(*args: str) -> None:
    """On the shared node, or on BEATD_FAULTS_RABBIT_NODE (a private node, with
    BEATD_TEST_AMQP pointing at it, so an outage disturbs no one else)."""
    node = os.environ.get("BEATD_FAULTS_RABBIT_NODE")
    where = ["-n", node] if node else []
    subprocess.run(["rabbitmqctl", *where, *args], check=True, capture_output=True, timeout=120)


@pytest.mark.skipif(
    not (DISRUPT or os.environ.get("BEATD_FAULTS_RABBIT_NODE")),
    reason="stops the shared RabbitMQ: set BEATD_FAULTS_DISRUPT=1 (or a private node)",
)
def test_rabbitmq_stopped_and_restarted(cluster: FaultCluster) -> None:
    outage = 30.0 if LONG else 10.0
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s")
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    with running(cluster, recorder):
        for _ in range(2):
            cluster.start()
        cluster.wait_for(cluster.leader, 30, "a leader")
        wait_new_fires(cluster, 2, "the first fires", timeout=30)
        try:
            _rabbitmqctl("stop_app")
            down = time.monotonic()
            # fires keep being recorded while the broker is away
            while time.monotonic() - down < outage:
                wait_new_fires(cluster, 2, "fires recorded during the outage")
            with cluster.engine.connect() as conn:  # before start_app: the relay drains fast
                backlog = conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one()
        finally:
            _rabbitmqctl("start_app")
        print(f"backlog when RabbitMQ came back: {backlog}")
        assert backlog >= outage - 2, "the outage left no backlog: was the broker down?"
        came_back = datetime.now(UTC)
        cluster.wait_for(  # every fire due by then is sent (later ones are recorded ahead)
            lambda: all(
                f["outcome"] == "sent" for f in cluster.fires() if f["scheduled_for"] <= came_back
            ),
            60,
            "the backlog to drain",
            step=0.2,
        )
        wait_new_fires(cluster, 2, "fires after the outage")
        assert len(cluster.live()) == 2
        stop_and_settle(cluster, recorder)
    books = account(
        cluster,
        recorder,
        f"RabbitMQ stop_app {outage:.0f}s",
        faults=1,
        deliver_late=outage + 35,
        max_duplicates=5,
        ordered=True,
    )
    assert not books.problems


@pytest.mark.skipif(not LONG, reason="the long variant: BEATD_LONG=1")
@pytest.mark.skipif(
    not (DISRUPT or PG_CLUSTER),
    reason="restarts the shared PostgreSQL: set BEATD_FAULTS_DISRUPT=1 (or a private cluster)",
)
def test_postgres_server_restart(restart_cluster: FaultCluster) -> None:
    cluster = restart_cluster
    crashes: list[float] = []
    cluster.write_config(SCHEDULES, lease=f"{LEASE:.0f}s")
    recorder = Recorder(cluster.amqp_url, cluster.queue)
    with running(cluster, recorder):
        for _ in range(3):
            cluster.start()
        cluster.wait_for(cluster.leader, 30, "a leader")
        wait_new_fires(cluster, 2, "the first fires", timeout=30)
        try:
            pg_restart(crashes)
            wait_new_fires(cluster, 3, "fires after the restart", timeout=60)
            # then down for longer than the lease: the leader self-fences, all retry
            pg_down_past_the_lease(cluster, crashes)
        finally:
            pg_ctl("start", check=False)
        wait_new_fires(cluster, 3, "fires after the database came back", timeout=60)
        assert len(cluster.live()) == 3, "an instance died"
        stop_and_settle(cluster, recorder)
    books = account(
        cluster,
        recorder,
        "PG restart + 2x lease down",
        faults=2,
        record_late=LEASE * 2 + 15,
        deliver_late=LEASE * 2 + 20,
        max_duplicates=20,
        crashes=crashes,
    )
    assert not books.problems
