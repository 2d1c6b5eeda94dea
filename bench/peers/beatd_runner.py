"""beatd under test: `beatd run` as a subprocess on a fresh PostgreSQL database and RabbitMQ.

Steady and burst go through the shared harness (`launch`); startup, catch-up,
failover and TOML loading are beatd's own workloads (no peer has them) and
live here. The daemon is run through `.venv/bin/beatd` when the console
script is installed, else through `beatd.cli.main:main` with the repo on
PYTHONPATH, which is the same code.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from beatd.model import Partition
from bench.harness import procs
from bench.harness.consumer import Record
from bench.harness.measure import (
    Count,
    Launched,
    Plan,
    Settings,
    environment,
    lag_metrics,
    wait_for,
)
from bench.harness.report import Result
from bench.harness.stats import median
from bench.harness.workloads import TASK, Burst, Interval
from bench.harness.workloads import steady as steady_schedules

NOT_AVAILABLE = "beatd daemon not available yet"


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def interval_table(i: Interval, queue: str) -> str:
    anchor = datetime.fromtimestamp(i.offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'[schedules.{i.name}]\nevery = "{i.period}s"\nanchor = "{anchor}"\n'
        f'task = "{TASK}"\nqueue = {_toml_string(queue)}\n\n'
    )


def burst_tables(burst: Burst, queue: str) -> Iterable[str]:
    for name in burst.names:
        yield (
            f'[schedules.{name}]\ncron = "{burst.cron}"\ntask = "{TASK}"\n'
            f"queue = {_toml_string(queue)}\n\n"
        )


def write_config(
    path: Path,
    db_url: str,
    amqp_url: str,
    tables: Iterable[str] = (),
    *,
    lease: str | None = None,
    instance_id: str | None = None,
    partitions: int = 1,
) -> Path:
    head = [
        "[beatd]",
        f"database = {_toml_string(db_url)}",
        f"broker = {_toml_string(amqp_url)}",
    ]
    if lease is not None:
        head.append(f"lease = {_toml_string(lease)}")
    if instance_id is not None:
        head.append(f"instance_id = {_toml_string(instance_id)}")
    if partitions != 1:
        head.append(f"partitions = {partitions}")
    with path.open("w") as out:
        out.write("\n".join(head) + "\n\n")
        for table in tables:
            out.write(table)
    return path


def command() -> list[str]:
    script = Path(sys.executable).parent / "beatd"
    if script.exists():
        return [str(script)]
    found = shutil.which("beatd")
    if found and Path(found).parent == Path(sys.executable).parent:
        return [found]
    return [sys.executable, "-c", "import sys; from beatd.cli.main import main; sys.exit(main())"]


def upgrade(db_url: str) -> None:
    from beatd.store.sql import migrate

    migrate.upgrade(db_url)


class Beatd:
    """`instances` processes of `beatd run` on one config (default: one, P = 1)."""

    name = "beatd"

    def __init__(self, instances: int = 1, partitions: int = 1) -> None:
        self.instances, self.partitions = instances, partitions

    def unavailable(self) -> str | None:
        for module in ("beatd.daemon", "beatd.cli.daemon_cmds", "beatd.store.sql.migrate"):
            try:
                found = importlib.util.find_spec(module)
            except ImportError:
                found = None
            if found is None:
                return NOT_AVAILABLE
        return None

    def launch(self, plan: Plan, settings: Settings) -> Launched:
        upgrade(plan.db_url)
        tables: list[Iterable[str]] = [[interval_table(plan.probe, plan.probe_queue)]]
        tables.append(interval_table(i, plan.queue) for i in plan.intervals)
        if plan.burst is not None:
            tables.append(burst_tables(plan.burst, plan.queue))
        config = write_config(
            plan.workdir / "beatd.toml",
            plan.db_url,
            settings.amqp_url,
            (t for group in tables for t in group),
            partitions=self.partitions,
        )
        first, *others = (
            start(config, plan.workdir / f"beatd-{k}.log" if k else plan.workdir / "beatd.log")
            for k in range(self.instances)
        )
        first.others = others
        return first


def start(config: Path, log: Path) -> Launched:
    proc = procs.start([*command(), "run", "--config", str(config), "--log-format", "text"], log)
    return Launched(proc, log)


# -- beatd's own workloads ----------------------------------------------------


def store_api_tables(
    db_url: str,
    tables: Iterable[tuple[str, dict[str, str]]],
    queue: str,
    next_after: Callable[[], datetime] = lambda: datetime.now(UTC),
    batch: int = 50_000,
) -> float:
    """Store schedules as API-owned, as `beatd add` would; returns seconds taken.

    `tables` are (name, codec table) without task and queue. One `Beat.add`
    per schedule costs a transaction each (minutes for 100,000), so the
    store's bulk file loader writes each batch and one UPDATE hands it to
    the API: the same rows `add` writes, and `beatd run` with a config
    without schedules keeps them. Batches keep the decoded schedules of one
    batch in memory, not a million. `next_after()` is asked once per batch
    for the instant each schedule's first fire must follow.
    """
    import sqlalchemy as sa

    from beatd import timing
    from beatd.codec import schedule_from_table
    from beatd.config import settings_from_document
    from beatd.model import Source
    from beatd.store import open_store

    started = time.monotonic()
    defaults = settings_from_document({}, env={}).defaults
    store = open_store(db_url)
    engine = sa.create_engine(db_url)
    chunk: list[tuple[str, dict[str, str]]] = []

    def flush() -> None:
        schedules = [
            schedule_from_table(
                name, {**table, "task": TASK, "queue": queue}, defaults, Source.FILE
            )
            for name, table in chunk
        ]
        after = next_after()
        store.load_file(schedules, lambda s: timing.next_after(s, after))
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE schedules SET source = 'api' WHERE source = 'file'"))
        chunk.clear()

    try:
        for item in tables:
            chunk.append(item)
            if len(chunk) >= batch:
                flush()
        if chunk:
            flush()
    finally:
        store.close()
        engine.dispose()
    return time.monotonic() - started


def _store_api_schedules(db_url: str, intervals: list[Interval], queue: str) -> float:
    """Store interval schedules as API-owned; returns seconds taken."""
    tables = (
        (
            i.name,
            {"every": f"{i.period}s", "anchor": datetime.fromtimestamp(i.offset, UTC).isoformat()},
        )
        for i in intervals
    )
    return store_api_tables(db_url, tables, queue)


def startup(n: int, settings: Settings) -> Result:
    """Launch to first fire with n schedules already stored in the database."""
    result = Result("beatd", f"startup-{n}")
    low, high = (1, 3) if settings.smoke else (10, 60)
    with environment(settings) as (db_url, queue, _probe, scratch, consumer):
        upgrade(db_url)
        stored_s = _store_api_schedules(db_url, steady_schedules(n, low, high), queue)
        settings.log(f"  beatd: stored {n} schedules in {stored_s:.1f}s")
        config = write_config(scratch / "beatd.toml", db_url, settings.amqp_url)
        launched_at = time.time()
        launched = start(config, scratch / "beatd.log")
        try:
            seen = wait_for(
                consumer,
                Count(lambda r: r.queue == queue, 1),
                settings.ready_timeout,
                launched.proc,
            )
            rss = procs.peak_rss_mb(launched.pid)
        finally:
            procs.stop(launched.proc)
        if not seen:
            raise RuntimeError(f"beatd sent nothing after launch:\n{procs.tail(launched.log)}")
    first = min(r.arrival for r in consumer.records if r.queue == queue)
    result.metrics.update(
        {"n": n, "seconds": first - launched_at, "store_s": stored_s, "peak_rss_mb": rss}
    )
    result.notes.append("seconds = launch to first fire arriving")
    return result


def toml_load(n: int, settings: Settings) -> Result:
    """Parse and validate a TOML file of n schedules, and load it into an empty database."""
    from beatd import timing
    from beatd.config import load_settings
    from beatd.store import open_store

    result = Result("beatd", f"toml-load-{n}")
    low, high = (1, 3) if settings.smoke else (10, 60)
    with environment(settings) as (db_url, queue, _probe, scratch, _consumer):
        upgrade(db_url)
        tables = (interval_table(i, queue) for i in steady_schedules(n, low, high))
        config = write_config(scratch / "beatd.toml", db_url, settings.amqp_url, tables)
        t0 = time.monotonic()
        loaded = load_settings(config, env={})
        t1 = time.monotonic()
        now = datetime.now(UTC)
        store = open_store(db_url)
        try:
            t2 = time.monotonic()
            reconciled = store.load_file(loaded.schedules, lambda s: timing.next_after(s, now))
            t3 = time.monotonic()
        finally:
            store.close()
    if len(reconciled.added) != n:
        raise RuntimeError(f"loaded {len(reconciled.added)} schedules, expected {n}")
    result.metrics.update(
        {"n": n, "seconds": (t1 - t0) + (t3 - t2), "parse_s": t1 - t0, "store_s": t3 - t2}
    )
    result.notes.append(f"parse+validate {t1 - t0:.2f}s, store {t3 - t2:.2f}s")
    return result


def catch_up(schedules: int, downtime: int, settings: Settings) -> Result:
    """`schedules` x every 1 s, misfire "all", stored `downtime` seconds before launch."""
    from beatd.api import Beat
    from beatd.clock import FakeClock
    from beatd.planner import CATCH_UP_CAP

    result = Result("beatd", f"catch-up-{schedules}x{downtime}s")
    with environment(settings) as (db_url, queue, _probe, scratch, consumer):
        upgrade(db_url)
        with Beat(db_url, clock=FakeClock(datetime.now(UTC) - timedelta(seconds=downtime))) as beat:
            for k in range(schedules):
                beat.add(f"c{k:03d}", every="1s", misfire="all", task=TASK, queue=queue)
        config = write_config(scratch / "beatd.toml", db_url, settings.amqp_url)
        launched_at = time.time()
        expected = schedules * min(downtime - 1, CATCH_UP_CAP)
        launched = start(config, scratch / "beatd.log")

        def missed(r: Record) -> bool:
            return r.queue == queue and r.scheduled is not None and r.scheduled < launched_at - 1

        try:
            wait_for(consumer, Count(missed, expected), settings.burst_timeout, launched.proc)
            cpu = procs.cpu_seconds(launched.pid)
            rss = procs.peak_rss_mb(launched.pid)
        finally:
            procs.stop(launched.proc)
    fires = [r for r in consumer.records if missed(r)]
    last = max((r.arrival for r in fires), default=None)
    seconds = None if last is None else last - launched_at
    result.metrics.update(
        {
            "seconds": seconds,
            "delivered": len(fires),
            "duplicates": lag_metrics(fires)["duplicates"],
            "expected": expected,
            "fires_per_s": len(fires) / seconds if seconds else None,
            "cpu_s": cpu,
            "peak_rss_mb": rss,
        }
    )
    dropped = schedules * max(0, downtime - 1 - CATCH_UP_CAP)
    note = f"{len(fires)}/{expected} missed fires sent; seconds = launch to the last"
    if dropped:
        note += f"; {dropped} dropped by the {CATCH_UP_CAP}-per-schedule catch-up cap (SPEC §4)"
    result.notes.append(note)
    return result


def holders(db_url: str) -> dict[Partition, str]:
    """Partition -> the instance id holding its lease now, by the database clock."""
    from beatd.store import open_store

    store = open_store(db_url)
    try:
        return {lease.partition: lease.holder for lease in store.leases()}
    finally:
        store.close()


class Fleet:
    """Instances `bench-<k>` (k counting up) of one config on one database, for kill rounds."""

    def __init__(
        self, db_url: str, scratch: Path, settings: Settings, tables: list[str], **config: Any
    ) -> None:
        self.db_url, self.scratch, self.settings = db_url, scratch, settings
        self.tables, self.config = tables, config  # config: write_config's keywords
        self.running: dict[str, Launched] = {}
        self.started = 0

    def launch(self) -> str:
        """Start the next instance; returns its instance id."""
        k, self.started = self.started, self.started + 1
        ident = f"bench-{k}"
        path = write_config(
            self.scratch / f"beatd-{k}.toml",
            self.db_url,
            self.settings.amqp_url,
            self.tables,
            instance_id=ident,
            **self.config,
        )
        self.running[ident] = start(path, self.scratch / f"beatd-{k}.log")
        return ident

    def kill(self, ident: str) -> float:
        """SIGKILL `ident` mid-second, so no fire is in flight; returns when (time.time())."""
        procs.sleep_until(math.floor(time.time()) + 1.5)
        killed_at = time.time()
        procs.kill(self.running.pop(ident).proc)
        return killed_at

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        for launched in self.running.values():
            procs.stop(launched.proc)


def failover(rounds: int, lease: int, settings: Settings) -> Result:
    """SIGKILL the leader; time to the first fire the new leader sends. Median of `rounds`."""
    result = Result("beatd", f"failover-lease{lease}s")
    beats = [Interval(f"f{k}", 1, 0) for k in range(5)]
    took: list[float] = []
    with environment(settings) as (db_url, queue, _probe, scratch, consumer):
        upgrade(db_url)
        tables = [interval_table(i, queue) for i in beats]
        with Fleet(db_url, scratch, settings, tables, lease=f"{lease}s") as fleet:
            fleet.launch()
            if not wait_for(consumer, Count(lambda r: r.queue == queue, 1), 60):
                raise RuntimeError(f"no fire from beatd:\n{procs.tail(scratch / 'beatd-0.log')}")
            fleet.launch()
            for k in range(1, rounds + 1):
                time.sleep(max(3.0, lease / 2))  # the new standby is up and asking
                holder = holders(db_url).get(Partition())
                if holder not in fleet.running:
                    raise RuntimeError(f"leader {holder!r} is none of ours")
                killed_at = fleet.kill(holder)

                def after_kill(r: Record, at: float = killed_at) -> bool:
                    return r.scheduled is not None and r.scheduled > at

                if not wait_for(consumer, Count(after_kill, 1), lease + 30):
                    raise RuntimeError("no fire after the leader was killed")
                took.append(min(r.arrival for r in consumer.records if after_kill(r)) - killed_at)
                settings.log(f"  beatd: failover {k}/{rounds}: {took[-1]:.2f}s")
                fleet.launch()
    result.metrics.update(
        {
            "seconds": median(took),
            "rounds": len(took),
            "min_s": min(took),
            "max_s": max(took),
            "lease_s": lease,
            "all_s": [round(t, 3) for t in took],
        }
    )
    dupes = lag_metrics([r for r in consumer.records if r.queue == queue])["duplicates"]
    result.metrics["duplicates"] = dupes
    result.notes.append(f"median of {len(took)}; lease {lease}s; {dupes} duplicate ids")
    return result
