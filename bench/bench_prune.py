"""History retention under load: the table stays flat, the fire lag does not move.

    .venv/bin/python bench/bench_prune.py [--backend postgres|sqlite] [--schedules N]
        [--minutes M] [--prune-every S] [--pg ADMIN_URL]

Runs one leader in-process (the real Daemon, tick, relay and pruner threads
on a real store: PostgreSQL in a fresh database created on --pg and dropped
afterwards, or a SQLite file), N every-1s schedules, messages to stdout://
sent to /dev/null (the database is what pruning competes for). Two phases
of M minutes each:

  keep      keep_history = 100 years: the pruner runs its rounds but finds
            nothing, so the table grows by N rows a second
  prune     keep_history = 1 minute: the first round deletes the backlog of
            the first phase in batches, back to back; then the table holds
            about (1 min + one round) of rows

Every 15 s it prints the history table's rows and size (PostgreSQL: heap,
indexes and TOAST of `fires`; SQLite: the pages in use) and the lag of the
fires published in that window (scheduled instant to publish, as the relay
sees it: p50, p99, max). The pruning round interval is --prune-every (the
daemon's default is 60 s; shorter here so a few minutes show several rounds).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from beatd import daemon as daemon_module
from beatd.config import Settings
from beatd.daemon import Daemon
from beatd.model import Every, Schedule
from beatd.publish.base import Message, Result, Status
from beatd.publish.stdout import StdoutPublisher
from beatd.store import open_store
from beatd.store.sql import SqlStore, migrate
from bench.bench_store import postgres, sqlite

SAMPLE = 15.0  # seconds between printed samples
KEEP_ALL = timedelta(days=36_500)
KEEP_SHORT = timedelta(minutes=1)


class LagRecorder:
    """A publisher that notes, per confirmed fire, how late it left (scheduled -> confirmed)."""

    def __init__(self, sink: StdoutPublisher) -> None:
        self.sink = sink
        self._lock = threading.Lock()
        self._lags: list[float] = []

    def publish(self, messages: Sequence[Message], now: datetime) -> list[Result]:
        results = self.sink.publish(messages, now)
        done = time.time()
        by_id = {m.fire_id: m for m in messages}
        with self._lock:
            self._lags.extend(
                done - by_id[r.fire_id].scheduled_for.timestamp()
                for r in results
                if r.status is Status.CONFIRMED
            )
        return results

    def prepare(self, messages: Sequence[Message]) -> None:
        self.sink.prepare(messages)

    def check(self) -> str | None:
        return self.sink.check()

    def close(self) -> None:
        self.sink.close()

    def take(self) -> list[float]:
        with self._lock:
            lags, self._lags = self._lags, []
        return lags


def table_size(store: SqlStore) -> tuple[int, float]:
    """(rows, MB) of the history table."""
    with store.engine.connect() as conn:
        rows = int(conn.exec_driver_sql("SELECT count(*) FROM fires").scalar_one())
        if store.dialect == "postgresql":
            size = conn.exec_driver_sql("SELECT pg_total_relation_size('fires')").scalar_one()
        else:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
            page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            size = (pages - free) * page  # the whole file, in use (history is most of it)
    return rows, int(size) / 1e6


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lag_text(lags: list[float]) -> str:
    if not lags:
        return "no fires"
    return (
        f"lag p50 {statistics.median(lags) * 1000:6.1f} ms  "
        f"p99 {quantile(lags, 0.99) * 1000:6.1f} ms  max {max(lags) * 1000:6.1f} ms"
    )


def sample(phase: str, elapsed: float, store: SqlStore, lags: list[float], pruned: float) -> str:
    rows, mb = table_size(store)
    return (
        f"{phase:<6} {elapsed:5.0f} s  rows {rows:>8,}  size {mb:7.2f} MB  "
        f"pruned {int(pruned):>8,}  fires {len(lags):>6,}  {lag_text(lags)}"
    )


def run(url: str, schedules: int, minutes: float, prune_every: float) -> None:
    migrate.upgrade(url)
    store = open_store(url)
    assert isinstance(store, SqlStore)
    daemon_module.PRUNE_EVERY = prune_every
    pulses = tuple(
        Schedule(f"p{i:05d}", Every(timedelta(seconds=1)), "bench.tasks.noop")
        for i in range(schedules)
    )
    settings = Settings(
        database=url, lease=timedelta(seconds=10), keep_history=KEEP_ALL, schedules=pulses
    )
    with open("/dev/null", "w") as null:
        publisher = LagRecorder(StdoutPublisher(null))
        daemon = Daemon(settings, store, publisher)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            phases = (("keep", KEEP_ALL), ("prune", KEEP_SHORT))
            summary: dict[str, list[float]] = {}
            started = time.monotonic()
            for phase, keep in phases:
                daemon.settings = dataclasses.replace(daemon.settings, keep_history=keep)
                publisher.take()
                lags: list[float] = []
                end = time.monotonic() + minutes * 60
                while time.monotonic() < end:
                    time.sleep(min(SAMPLE, max(0.0, end - time.monotonic())))
                    window = publisher.take()
                    lags += window
                    pruned = daemon.metrics.registry.get_sample_value("beatd_history_pruned_total")
                    elapsed = time.monotonic() - started
                    print(sample(phase, elapsed, store, window, pruned or 0.0), flush=True)
                summary[phase] = lags
            print()
            for phase, lags in summary.items():
                print(f"{phase:<6} all {len(lags):>7,} fires  {lag_text(lags)}")
        finally:
            daemon.request_stop()
            thread.join(60)
            store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--schedules", type=int, default=200, help="every-1s schedules")
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes per phase")
    parser.add_argument("--prune-every", type=float, default=10.0, help="seconds between rounds")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print(
        f"{args.backend}: {args.schedules} every-1s schedules, {args.minutes:g} min per phase, "
        f"a pruning round every {args.prune_every:g} s, {daemon_module.PRUNE_BATCH} rows per batch"
    )
    with postgres(args.pg) if args.backend == "postgres" else sqlite() as url:
        run(url, args.schedules, args.minutes, args.prune_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
