"""Daemon benchmark: fire lag under load, and failover time after SIGKILL.

    .venv/bin/python bench/bench_daemon.py [--schedules 1000] [--seconds 20] [--lease 3s]

Runs real `beatd run` processes on a fresh PostgreSQL database (dropped
afterwards) and a unique RabbitMQ queue (deleted afterwards):

1. lag: one instance, N schedules `every = "1s"`; for --seconds, every
   message's lag = arrival at a consumer - its `beatd-scheduled-for` header.
   Prints p50/p99/max and how many instants arrived of those expected.
2. failover: three instances; SIGKILL the leader, time until the first
   message published by the new leader arrives; median of --rounds (3).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "daemon"))

import sqlalchemy as sa  # noqa: E402
from daemon_cluster import Cluster, Consumer, wait_for  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def lag_phase(cluster: Cluster, consumer: Consumer, n: int, seconds: float) -> None:
    beatd = cluster.start()
    wait_for(cluster.leader, 60, "a leader")
    wait_for(lambda: len(consumer.got) >= n, 60, "the first round of fires")
    start = time.time() + 1
    time.sleep(seconds + 1)  # the load runs; the consumer measures
    stop = start + seconds
    window = [
        arrived - at.timestamp()
        for _, at, arrived in consumer.got
        if start <= at.timestamp() < stop
    ]
    expected = n * int(seconds)
    print(
        f"lag over {seconds:.0f}s, {n} schedules every 1s: "
        f"p50={percentile(window, 50) * 1000:.0f}ms p99={percentile(window, 99) * 1000:.0f}ms "
        f"max={max(window) * 1000:.0f}ms ({len(window)}/{expected} fires)"
    )
    del beatd


def _first_arrival(consumer: Consumer, seen: int, after: float) -> Callable[[], float | None]:
    return lambda: next((t for _, _, t in consumer.got[seen:] if t > after), None)


def failover_phase(cluster: Cluster, consumer: Consumer, rounds: int) -> None:
    while len([b for b in cluster.procs if b.proc.poll() is None]) < 3:
        cluster.start()
    times = []
    for _ in range(rounds):
        old = wait_for(cluster.lease, 30, "a lease")
        leader = wait_for(cluster.leader, 30, "a leader")
        time.sleep(1.5)  # let the standbys settle into polling
        seen = len(consumer.got)
        leader.kill()
        killed = time.time()
        leader.wait(10)
        first = wait_for(
            _first_arrival(consumer, seen, killed + 0.05), 60, "a fire from the new leader"
        )
        new = wait_for(cluster.lease, 30, "the new lease")
        times.append(first - killed)
        print(f"  failover: {first - killed:.2f}s (epoch {old.epoch} -> {new.epoch})")
        cluster.start()  # back to three instances
    print(f"failover after SIGKILL: median {statistics.median(times):.2f}s of {rounds}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--lease", default="3s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=PG_ADMIN)
    parser.add_argument("--amqp", default=AMQP)
    args = parser.parse_args()
    name = f"beatd_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cluster = Cluster(args.pg.rsplit("/", 1)[0] + f"/{name}", args.amqp, Path(tmp))
            try:
                schedules = {
                    f"s{i:05}": {"every": "1s", "task": "bench.tasks.noop"}
                    for i in range(args.schedules)
                }
                cluster.write_config(schedules, lease=args.lease)
                consumer = Consumer(cluster.amqp_url, cluster.queue)
                lag_phase(cluster, consumer, args.schedules, args.seconds)
                failover_phase(cluster, consumer, args.rounds)
                consumer.stop()
            finally:
                cluster.close()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
