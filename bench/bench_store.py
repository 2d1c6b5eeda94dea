"""Store benchmark at scale: bulk load, put, list, due query, record.

    .venv/bin/python bench/bench_store.py [--n 100000] [--backend sqlite|postgres|both]

Targets: the due query (100 due) under 5 ms whatever the number of
schedules; a bulk load of 100,000 schedules under 10 s. PostgreSQL runs in a
fresh database created on --pg (default postgres@127.0.0.1:5432) and dropped
afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from beatd.ids import fire_id
from beatd.model import Advance, Decision, Every, Message, Outcome, Schedule
from beatd.store import open_store
from beatd.store.base import Store
from beatd.store.sql import migrate

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DUE = 100
LATER = NOW + timedelta(days=400)


def schedules(n: int, prefix: str = "s") -> list[Schedule]:
    return [
        Schedule(
            name=f"{prefix}{i:07d}",
            spec=Every(timedelta(seconds=60 + i % 3600)),
            task="app.tasks.work",
            kwargs={"i": i},
        )
        for i in range(n)
    ]


def first_at(n: int) -> Callable[[Schedule], datetime]:
    """DUE schedules spread through the set are due; the rest are in the future."""
    spread = max(1, n // DUE)

    def at(schedule: Schedule) -> datetime:
        index = int(schedule.name[1:])
        if index % spread == 0 and index // spread < DUE:
            return NOW - timedelta(seconds=1 + index // spread)
        return NOW + timedelta(seconds=1 + index)

    return at


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_ms(action: Callable[[], object], runs: int = 20) -> float:
    return statistics.median(timed(action) for _ in range(runs)) * 1000


def decisions(count: int) -> list[Decision]:
    out = []
    for i in range(count):
        name, when = f"s{i % 1000:07d}", NOW - timedelta(minutes=i // 1000)
        fid = fire_id(name, when)
        message = Message(fid, name, when, when, "", "celery", b"[[], {}, {}]", headers={"id": fid})
        out.append(Decision(name, when, fid, Outcome.PENDING, message=message))
    return out


def run(url: str, n: int) -> dict[str, float]:
    migrate.upgrade(url)
    store: Store = open_store(url)
    try:
        items, next_at = schedules(n), first_at(n)
        figures = {"load_s": timed(lambda: store.load_file(items, next_at))}
        figures["reload_unchanged_s"] = timed(lambda: store.load_file(items, next_at))
        counter = iter(range(10**9))

        def put() -> None:
            name = f"api{next(counter)}"
            store.put(Schedule(name, Every(timedelta(minutes=1)), "t"), LATER, replace=False)

        figures["put_ms"] = median_ms(put)
        figures["all_s"] = timed(store.all)
        due = store.due(NOW, 1000)
        assert len(due) == min(n, DUE), len(due)
        figures["due_ms"] = median_ms(lambda: store.due(NOW, 1000))
        figures["next_due_at_ms"] = median_ms(store.next_due_at)
        lease = store.acquire("bench", timedelta(minutes=5), "bench")
        batch = decisions(1000)
        versions = {s.schedule.name: s.version for s in due}
        advances = [
            Advance(name, v, NOW + timedelta(hours=1), NOW, 1) for name, v in versions.items()
        ]
        figures["record_1000_ms"] = timed(lambda: store.record(lease, batch, advances)) * 1000
        assert lease is not None
        figures["claim_1000_ms"] = timed(lambda: store.claim(lease, NOW, 1000)) * 1000
        ids = [d.fire_id for d in batch]
        figures["mark_sent_1000_ms"] = timed(lambda: store.mark_sent(ids, NOW)) * 1000
        return figures
    finally:
        store.close()


@contextmanager
def postgres(admin: str) -> Iterator[str]:
    name = f"beatd_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@contextmanager
def sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{folder}/bench.db"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="schedules (default 100000)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    failed = False
    for backend in backends:
        with sqlite() if backend == "sqlite" else postgres(args.pg) as url:
            figures = run(url, args.n)
        print(f"{backend} ({args.n:,} schedules)")
        for key, value in figures.items():
            print(f"  {key:<20} {value:10.3f}")
        if figures["due_ms"] >= 5 or (args.n <= 100_000 and figures["load_s"] >= 10):
            print("  MISSED a target (due < 5 ms, load of 100,000 < 10 s)")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
