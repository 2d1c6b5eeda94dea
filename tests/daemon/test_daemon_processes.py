"""Real `beatd run` processes on PostgreSQL + RabbitMQ: failover, fencing, signals.

Each schedule is `every = "1s"`, `misfire = "all"`, so every instant of the
window must reach the queue exactly once whatever happens to the leader.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import statistics
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_cluster import Beatd, Cluster, Consumer, running

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.faults]

TICK = {"tick": {"every": "1s", "misfire": "all", "task": "app.tasks.tick"}}
LEASE = 3.0


@pytest.fixture
def cluster(pg_url: str, amqp_server: str, tmp_path: Path) -> Iterator[Cluster]:
    with running(pg_url, amqp_server, tmp_path, show_logs=40) as c:
        yield c


def contiguous(instants: list[datetime]) -> bool:
    return all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(instants))


def check_exactly_once(cluster: Cluster, got: list[tuple[str, datetime, float]]) -> None:
    """Every instant from first to last recorded once, sent, and in the queue."""
    fires = cluster.fires("tick")
    instants = [f["scheduled_for"] for f in fires]
    assert instants == sorted(set(instants)), "an instant was recorded twice"
    assert contiguous(instants), "an instant is missing from the fires table"
    assert {f["outcome"] for f in fires} == {"sent"}
    ids = [g[0] for g in got] + [m for m, _ in cluster.drain()]
    assert set(ids) == {f["fire_id"] for f in fires}, "queue and fires table disagree"
    # more than once only when a crash fell between confirm and its record
    assert len(ids) - len(set(ids)) <= 1


def test_single_daemon_publishes_each_instant_once(cluster: Cluster) -> None:
    cluster.write_config(TICK)
    consumer = Consumer(cluster.amqp_url, cluster.queue)
    beatd = cluster.start()
    cluster.wait_for(lambda: len(consumer.got) >= 6, 30, "six messages")
    status = cluster.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    report: dict[str, Any] = json.loads(status.stdout)
    assert report["leader"] == beatd.holder and report["epoch"] >= 1
    assert isinstance(report["backlog"], int) and report["lease_expires"].endswith("Z")
    assert report["database"] == "ok" and report["broker"] == "ok"
    assert ":guest@" not in status.stdout
    beatd.signal(signal.SIGTERM)
    assert beatd.wait(20) == 0
    consumer.stop()
    check_exactly_once(cluster, consumer.got)
    lease = cluster.lease()
    assert lease is not None and not lease.live  # released on SIGTERM
    lags = sorted(arrived - at.timestamp() for _, at, arrived in consumer.got)
    print(f"fire lag p50={statistics.median(lags) * 1000:.0f}ms max={lags[-1] * 1000:.0f}ms")
    assert statistics.median(lags) < 0.5


def test_sigkill_the_leader_a_standby_takes_over_nothing_lost_or_doubled(
    cluster: Cluster,
) -> None:
    cluster.write_config(TICK, lease=f"{LEASE:.0f}s")
    consumer = Consumer(cluster.amqp_url, cluster.queue)
    procs = [cluster.start() for _ in range(3)]
    leader = cluster.wait_for(cluster.leader, 30, "a leader")
    cluster.wait_for(lambda: len(consumer.got) >= 3, 30, "three messages")
    old = cluster.lease()
    assert old is not None
    leader.kill()
    killed = time.monotonic()
    new = cluster.wait_for(
        lambda: (lease := cluster.lease()) and lease.live and lease.epoch > old.epoch and lease,
        LEASE + 5,
        "a new leader",
        step=0.01,
    )
    failover = time.monotonic() - killed
    print(f"failover after SIGKILL: {failover:.2f}s (lease {LEASE}s)")
    assert failover <= LEASE + 1.0
    assert new.holder != leader.holder
    resumed = datetime.now(UTC) + timedelta(seconds=2)
    cluster.wait_for(
        lambda: any(at >= resumed for _, at, _ in consumer.got), 15, "fires by the new leader"
    )
    for beatd in procs:
        if beatd is not leader:
            beatd.signal(signal.SIGTERM)
    assert [b.wait(20) for b in procs if b is not leader] == [0, 0]
    consumer.stop()
    check_exactly_once(cluster, consumer.got)
    epochs = {f["epoch"] for f in cluster.fires("tick")}
    assert epochs >= {old.epoch, new.epoch}


def test_a_stopped_leader_is_fenced_and_records_nothing_after(cluster: Cluster) -> None:
    cluster.write_config(TICK, lease=f"{LEASE:.0f}s")
    consumer = Consumer(cluster.amqp_url, cluster.queue)
    procs = [cluster.start() for _ in range(2)]
    leader = cluster.wait_for(cluster.leader, 30, "a leader")
    cluster.wait_for(lambda: len(consumer.got) >= 2, 30, "two messages")
    old = cluster.lease()
    assert old is not None
    leader.signal(signal.SIGSTOP)
    new = cluster.wait_for(
        lambda: (lease := cluster.lease()) and lease.live and lease.epoch > old.epoch and lease,
        LEASE + 5,
        "the standby to take over",
    )
    cluster.wait_for(
        lambda: len([f for f in cluster.fires("tick") if f["epoch"] == new.epoch]) >= 2,
        10,
        "fires by the new leader",
    )
    taken_over = min(f["decided_at"] for f in cluster.fires("tick") if f["epoch"] == new.epoch)
    leader.signal(signal.SIGCONT)
    # Give the resumed process several of its tick periods to misbehave.
    count = len(cluster.fires("tick"))
    cluster.wait_for(lambda: len(cluster.fires("tick")) >= count + 3, 10, "three more fires")
    stale = [f for f in cluster.fires("tick") if f["epoch"] == old.epoch]
    assert stale and max(f["decided_at"] for f in stale) < taken_over
    lease = cluster.lease()
    assert lease is not None and lease.holder == new.holder and lease.epoch == new.epoch
    assert leader.proc.poll() is None  # alive, now a standby
    for beatd in procs:
        beatd.signal(signal.SIGTERM)
    assert [b.wait(20) for b in procs] == [0, 0]
    consumer.stop()
    check_exactly_once(cluster, consumer.got)


def test_sigterm_exits_0_and_the_standby_takes_over_at_once(cluster: Cluster) -> None:
    cluster.write_config(
        TICK, lease="10s"
    )  # a long lease: only the release explains a fast takeover
    consumer = Consumer(cluster.amqp_url, cluster.queue)
    procs = [cluster.start() for _ in range(2)]
    leader = cluster.wait_for(cluster.leader, 30, "a leader")
    standby = next(b for b in procs if b is not leader)
    cluster.wait_for(lambda: len(consumer.got) >= 2, 30, "two messages")
    leader.signal(signal.SIGTERM)
    assert leader.wait(20) == 0
    exited = time.monotonic()
    cluster.wait_for(
        lambda: (lease := cluster.lease()) and lease.live and lease.holder == standby.holder,
        5,
        "the standby to lead",
        step=0.01,
    )
    takeover = time.monotonic() - exited
    print(f"takeover after SIGTERM: {takeover:.2f}s")
    assert takeover < 1.0
    resumed = datetime.now(UTC) + timedelta(seconds=1)
    cluster.wait_for(
        lambda: any(at >= resumed for _, at, _ in consumer.got), 10, "fires by the standby"
    )
    standby.signal(signal.SIGTERM)
    assert standby.wait(20) == 0
    consumer.stop()
    check_exactly_once(cluster, consumer.got)


def skew_warned(beatd: Beatd, jump: float) -> bool:
    for line in beatd.log_lines():
        if "off the database" in line:
            skew = json.loads(line).get("skew_seconds")
            if isinstance(skew, float | int) and abs(skew - jump) < 1:
                return True
    return False


def test_a_leader_clock_jump_neither_fires_early_nor_drops(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Fires are decided on the database's clock: stepping the leader's wall clock
    an hour either way changes no instant and no send time, and is warned about."""
    offset = tmp_path / "clock-offset"
    offset.write_text("0")
    cluster.write_config(TICK)
    consumer = Consumer(cluster.amqp_url, cluster.queue)
    beatd = cluster.start({"BEATD_TEST_CLOCK_OFFSET_FILE": str(offset)})
    cluster.wait_for(lambda: len(consumer.got) >= 2, 30, "two messages")
    for jump in (3600, -3600):
        offset.write_text(str(jump))
        cluster.wait_for(
            lambda: skew_warned(beatd, jump),  # noqa: B023
            10,
            f"the skew warning for {jump}s",
        )
        seen = len(consumer.got)
        cluster.wait_for(lambda: len(consumer.got) >= seen + 3, 10, "three more fires")  # noqa: B023
    beatd.signal(signal.SIGTERM)
    assert beatd.wait(20) == 0
    consumer.stop()
    check_exactly_once(cluster, consumer.got)
    lags = [arrived - at.timestamp() for _, at, arrived in consumer.got]
    assert min(lags) > -0.05 and max(lags) < 5.0, lags


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return None


def test_sighup_reloads_and_a_broken_file_keeps_the_last_good(cluster: Cluster) -> None:
    port = free_port()
    http = f'http = "127.0.0.1:{port}"'
    cluster.write_config({"a": {"every": "1h", "task": "t.a"}}, extra=http)
    beatd = cluster.start()
    cluster.wait_for(lambda: cluster.schedule_names() == ["a"], 30, "schedule a loaded")
    cluster.wait_for(cluster.leader, 30, "a leader")
    metrics = cluster.wait_for(lambda: get(f"http://127.0.0.1:{port}/metrics"), 10, "/metrics")
    assert "beatd_is_leader 1.0" in metrics
    assert get(f"http://127.0.0.1:{port}/healthz") == "ok\n"
    cluster.write_config({"b": {"every": "1h", "task": "t.b"}}, extra=http)
    beatd.signal(signal.SIGHUP)
    cluster.wait_for(lambda: cluster.schedule_names() == ["b"], 10, "schedule b after SIGHUP")
    cluster.config.write_text(cluster.config.read_text() + "[schedules.broken\n")
    before = len(beatd.log_lines())
    beatd.signal(signal.SIGHUP)
    errors = cluster.wait_for(
        lambda: [line for line in beatd.log_lines()[before:] if '"level": "error"' in line],
        10,
        "the reload error",
    )
    assert len(errors) == 1
    entry = json.loads(errors[0])
    assert entry["msg"].startswith("reload failed, keeping the last good schedules:")
    assert "beatd.toml:" in entry["msg"]
    assert beatd.proc.poll() is None
    assert cluster.schedule_names() == ["b"]
    beatd.signal(signal.SIGTERM)
    assert beatd.wait(20) == 0
