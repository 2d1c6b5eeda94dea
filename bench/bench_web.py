"""Web console benchmark: page times at 1,000 and 100,000 schedules, and the leader's lag
with the console closed and with it open and refreshing, in the same run.

    .venv/bin/python bench/bench_web.py [--sizes 1000,100000] [--requests 20] [--seconds 20]

For each size, on a fresh PostgreSQL database (dropped afterwards) and a unique
RabbitMQ queue: that many schedules (--lag of them `every = "1s"` in the config
file, the rest daily crons over many zones, stored as API schedules), one real
`beatd run` leading, a consumer timing every message, and `beatd web` in its
own process. Prints, per page, the server's time (the app's `Server-Timing`
header: wall time, and the CPU time of the console's thread, which the machine's
load hardly changes) and the round trip, median and p95 of --requests requests; then the
lag of every message (arrival - scheduled instant) for --seconds with no
console request, and for --seconds while a client reloads the schedules list,
a schedule and the cluster page back to back as fast as the console answers.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "daemon"))
sys.path.insert(0, str(ROOT / "tests" / "web"))

import sqlalchemy as sa  # noqa: E402
from daemon_cluster import Cluster, Consumer, wait_for  # noqa: E402
from web_browser import WebProcess  # noqa: E402

from beatd import timing  # noqa: E402
from beatd.model import Cron, Schedule  # noqa: E402
from beatd.store.sql import tables  # noqa: E402
from beatd.store.sql.schedules import definition_columns  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def bulk_load(db_url: str, count: int) -> None:
    """`count` API schedules written straight into the table (what `beatd add` would store),
    so that neither the daemon nor the console parses a 100,000-table file: daily crons
    over many zones and minutes; one in a hundred paused."""
    now = datetime.now(UTC)
    engine = sa.create_engine(db_url)
    try:
        for start in range(0, count, 5000):
            rows = []
            for i in range(start, min(count, start + 5000)):
                schedule = Schedule(
                    name=f"job-{i:06d}",
                    spec=Cron(f"{i % 60} {i // 60 % 24} * * *"),
                    task=f"bench.tasks.job{i % 50}",
                    timezone=ZoneInfo(ZONES[i % len(ZONES)]),
                )
                row = definition_columns(schedule)
                row.update(
                    name=schedule.name,
                    next_at=timing.next_after(schedule, now),
                    paused=i % 100 == 99,
                    created_at=now,
                    updated_at=now,
                )
                rows.append(row)
            with engine.begin() as conn:
                conn.execute(sa.insert(tables.schedules), rows)
    finally:
        engine.dispose()


def fetch(url: str) -> tuple[float, float, float]:
    """(server ms, console CPU ms, both from Server-Timing; round trip ms) of one GET."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
        timing = response.headers["Server-Timing"] or ""
    trip = (time.perf_counter() - started) * 1000
    found = dict(re.findall(r"(\w+);dur=([\d.]+)", timing))
    return float(found.get("app", "nan")), float(found.get("cpu", "nan")), trip


def time_pages(base: str, pages: list[str], requests: int) -> None:
    for path in pages:
        for _ in range(3):  # warm: templates compiled, connections pooled
            fetch(base + path)
        samples = [fetch(base + path) for _ in range(requests)]
        server, cpu, trip = ([sample[i] for sample in samples] for i in range(3))
        print(
            f"  {path:<38} server p50 {statistics.median(server):6.1f} ms  "
            f"p95 {percentile(server, 95):6.1f} ms  (CPU p50 {statistics.median(cpu):5.1f} ms)  "
            f"round trip p50 {statistics.median(trip):6.1f} ms"
        )


def lag_window(consumer: Consumer, seconds: float) -> list[float]:
    start = time.time() + 1
    time.sleep(seconds + 2)  # the leader runs; the consumer stamps arrivals
    stop = start + seconds
    return [
        arrived - at.timestamp()
        for _, at, arrived in consumer.got
        if start <= at.timestamp() < stop
    ]


def show_lag(what: str, lags: list[float], extra: str = "") -> None:
    print(
        f"  {what:<34} p50 {percentile(lags, 50) * 1000:5.0f} ms  p99 "
        f"{percentile(lags, 99) * 1000:5.0f} ms  max {max(lags, default=0) * 1000:5.0f} ms  "
        f"({len(lags)} messages){extra}"
    )


class Refresher(threading.Thread):
    """An operator's browser reloading the console's pages back to back."""

    def __init__(self, base: str, pages: list[str]) -> None:
        super().__init__(daemon=True)
        self.base, self.pages = base, pages
        self.done = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for path in self.pages:
                fetch(self.base + path)
                self.done += 1


def run_size(args: argparse.Namespace, size: int) -> None:
    name = f"beatd_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cluster = Cluster(args.pg.rsplit("/", 1)[0] + f"/{name}", args.amqp, Path(tmp))
            web: WebProcess | None = None
            consumer = Consumer(cluster.amqp_url, cluster.queue)
            try:
                ticks = {
                    f"lag-{i:04d}": {"every": "1s", "task": "bench.tasks.tick"}
                    for i in range(args.lag)
                }
                cluster.write_config(ticks, lease="5s")
                started = time.monotonic()
                bulk_load(cluster.db_url, size - args.lag)
                print(f"{size:,} schedules stored in {time.monotonic() - started:.1f} s")
                started = time.monotonic()
                cluster.start()
                wait_for(cluster.leader, 300, "a leader")
                wait_for(lambda: len(consumer.got) >= args.lag * 3, 300, "fires")
                print(f"{size:,} schedules: leader firing after {time.monotonic() - started:.1f} s")
                web = WebProcess.start(cluster.config, Path(tmp), timeout=600)
                last = -(-size // 50)
                pages = [
                    "/schedules",
                    f"/schedules?page={last}",
                    "/schedules?q=job-0012&state=paused",
                    "/schedule?name=lag-0001",
                    "/cluster",
                ]
                time_pages(web.url, pages, args.requests)
                show_lag("lag, console closed", lag_window(consumer, args.seconds))
                refresher = Refresher(web.url, [pages[0], pages[3], pages[4]])
                refresher.start()
                lags = lag_window(consumer, args.seconds)
                refresher.stop.set()
                refresher.join(30)
                rate = f", {refresher.done / (args.seconds + 2):.0f} pages/s served"
                show_lag("lag, console refreshing", lags, rate)
            finally:
                if web is not None:
                    web.stop()
                consumer.stop()
                cluster.close()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000", help="comma-separated schedule counts")
    parser.add_argument("--lag", type=int, default=200, help="schedules every 1s (lag measured)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument("--seconds", type=float, default=20, help="each lag window")
    parser.add_argument("--pg", default=PG_ADMIN)
    parser.add_argument("--amqp", default=AMQP)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        run_size(args, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
