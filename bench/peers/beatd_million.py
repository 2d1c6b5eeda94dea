"""The `million` workload: a million stored schedules beside 10,000, at the same due rate.

Issue 15's single-leader targets: with 1,000,000 schedules stored (mostly
hourly and daily cron spread with H, some intervals; `StoredMix`), a
starting `beatd run` publishes its first fire within 2 s, stays within
200 MB, and spends at most 1.25x the CPU per fire of a run that stores only
the 10,000 schedules making the same due fires (the tick's cost follows
what is due, not what is stored). Both runs happen in one invocation, the
reference first, and are measured alike: launch to the first fire arriving,
then a window of whole minutes (each holds the same number of minute
crowds) for CPU, RSS, lag and what PostgreSQL wrote.

The slow schedules are stored first, their first instants computed after
the time the whole load is expected to end, so the daemon starts with
(almost) nothing overdue, as an instance restarted in seconds would; the
hot ones are stored last, just before the launch. `VACUUM ANALYZE` follows
the bulk load, as autovacuum would on a database that had grown to this
size (this server runs with autovacuum off).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.harness import procs, profile
from bench.harness.consumer import Record
from bench.harness.measure import Count, Settings, environment, lag_metrics, wait_for
from bench.harness.report import Result
from bench.harness.services import backend_pids, conninfo
from bench.harness.stats import summarize
from bench.harness.workloads import StoredMix
from bench.peers.beatd_runner import start, store_api_tables, upgrade, write_config

TABLES = ("schedules", "fires", "outbox")
VACUUM_GUESS_S = 5.0  # per million rows, for the first-instant estimate (1.3 s measured)


def mix_for(n: int, small: int, smoke: bool) -> StoredMix:
    return StoredMix(n, small, 1, 3) if smoke else StoredMix(n, small)


def reference(mix: StoredMix, settings: Settings) -> Result:
    """The run storing only the `mix.small` schedules that make the due fires."""
    return _run(mix, False, settings)


def stored(mix: StoredMix, settings: Settings, ref: Result | None) -> Result:
    """The run storing all `mix.stored`; its CPU per fire as a ratio to `ref`'s."""
    result = _run(mix, True, settings)
    mine = result.metrics.get("cpu_ms_per_fire")
    theirs = None if ref is None else ref.metrics.get("cpu_ms_per_fire")
    if mine and theirs:
        result.metrics["cpu_per_fire_ratio"] = mine / theirs
        result.notes.append(f"CPU per fire x{mine / theirs:.2f} of {mix.small:,} stored")
    return result


class _Paced:
    """Counts the slow schedules handed to the loader; says after when their first fires go.

    Each batch's first instants follow the time the load is expected to end
    (from the rate of the batches stored so far, with a margin) plus the
    VACUUM: instants in between are skipped, as for schedules added then,
    and (almost) none is overdue when the daemon starts.
    """

    def __init__(self, total: int) -> None:
        self.total, self.taken, self.began = total, 0, time.monotonic()
        self.stored = 0  # rows of the batches before the one being stored
        self.ends = 0.0  # epoch seconds all batches' first instants follow

    def count(self, tables: Iterable[tuple[str, dict[str, str]]]) -> Iterator[Any]:
        for item in tables:
            self.taken += 1
            yield item

    def after(self) -> datetime:
        """Called as each batch is stored: that batch and the rest are still to go."""
        elapsed = time.monotonic() - self.began
        rate = self.stored / elapsed if self.stored else 3000.0  # rows/s of the batches done
        left = 1.25 * (self.total - self.stored) / rate + VACUUM_GUESS_S * self.total / 1e6 + 10
        self.stored = self.taken
        self.ends = max(self.ends, time.time() + left)  # a first guess may reach furthest
        return datetime.now(UTC) + timedelta(seconds=left)


def _run(mix: StoredMix, big: bool, settings: Settings) -> Result:
    n = mix.stored if big else mix.small
    result = Result("beatd", f"million-{n}" if big else f"million-ref-{n}")
    with environment(settings) as (db_url, queue, _probe, scratch, consumer):
        upgrade(db_url)
        store_s, not_before = 0.0, 0.0
        if big:
            paced = _Paced(mix.stored - mix.hot)
            store_s = store_api_tables(db_url, paced.count(mix.slow_tables()), queue, paced.after)
            not_before = paced.ends
        tables = mix.hot_tables() if big else mix.reference_tables()
        vacuum_s = _vacuum(db_url)  # the bulk; the few last rows are as after any change
        store_s += store_api_tables(db_url, tables, queue)
        settings.log(f"  beatd: stored {n:,} in {store_s:.0f}s, vacuumed in {vacuum_s:.0f}s")
        before = _stats(db_url)
        config = write_config(scratch / "beatd.toml", db_url, settings.amqp_url)
        launched_at = time.time()
        launched = start(config, scratch / "beatd.log")
        starting = None
        if settings.profile_dir is not None:  # the start too: what the first fire waits for
            starting = settings.profile_dir / f"profile-beatd-{result.workload}-start.txt"
            profiler_start = profile.start(launched.pid, 5, starting)
        try:
            if not wait_for(
                consumer,
                Count(lambda r: r.queue == queue, 1),
                settings.ready_timeout,
                launched.proc,
            ):
                raise RuntimeError(f"beatd sent nothing:\n{procs.tail(launched.log)}")
            first = min(r.arrival for r in consumer.records if r.queue == queue)
            # A minute's crowd before the window: the reference has decoded its crowd
            # once (the big run never can: its crowd is other schedules every minute).
            warm = max(first + settings.warmup, launched_at + (0 if settings.smoke else 60))
            t0, t1 = _window(warm, not_before, settings)
            settings.log(f"  beatd: first fire after {first - launched_at:.2f}s; window at {t0}")
            procs.sleep_until(t0)
            cpu0 = procs.cpu_seconds(launched.pid) or 0.0
            pg0 = procs.cpu_of(backend_pids(settings.pg_admin_url, db_url))
            stats0 = _stats(db_url)
            stacks = None
            if settings.profile_dir is not None:
                stacks = settings.profile_dir / f"profile-beatd-{result.workload}.txt"
                profiler = profile.start(launched.pid, t1 - t0, stacks)
            procs.sleep_until(t1)
            cpu1 = procs.cpu_seconds(launched.pid)
            backends = backend_pids(settings.pg_admin_url, db_url)
            pg1 = procs.cpu_of(backends)
            stats1 = _stats(db_url)
            rss = procs.peak_rss_mb(launched.pid)
            rss_now = procs.peak_rss_mb(launched.pid, "VmRSS")
            if starting is not None:
                profile.finish(profiler_start)
                result.metrics["profile_start"] = profile.summary(starting)
                with launched.log.open("rb") as log:  # the start's lines, not every fire's
                    starting.with_suffix(".log").write_bytes(log.read(200_000))
            if stacks is not None:
                profile.finish(profiler)
                result.metrics["profile"] = profile.summary(stacks)
                result.notes.append(f"profiled (py-spy, 100 Hz): {stacks.name}")
        finally:
            procs.stop(launched.proc)
        sizes = _sizes(db_url)
        consumer.stop()
    window = [r for r in consumer.records if r.queue == queue and t0 <= r.arrival < t1]
    minutes = (t1 - t0) / 60
    result.metrics.update(lag_metrics(window))
    result.metrics.update(
        {
            "n": n,
            "hot": mix.hot,
            "crowd_per_min": mix.crowd,
            "store_s": round(store_s, 1),
            "vacuum_s": round(vacuum_s, 1),
            "overdue_at_launch": before["overdue"],
            "seconds": first - launched_at,
            "window_s": round(t1 - t0, 3),
            "fires_per_s": len(window) / (t1 - t0),
            "cpu_s_per_min": None if cpu1 is None else (cpu1 - cpu0) / minutes,
            "pg_cpu_s_per_min": procs.cpu_delta(pg0, pg1) / minutes,
            "peak_rss_mb": rss,
            "rss_at_end_mb": rss_now,
            "connections": len(backends),  # beatd's sessions at the window's end
            "kept_up": _steady_lag(window, t0, t1),
            "sizes": sizes,
        }
    )
    if cpu1 is not None and window:
        result.metrics["cpu_ms_per_fire"] = (cpu1 - cpu0) * 1000 / len(window)
        pg = procs.cpu_delta(pg0, pg1)
        result.metrics["cpu_ms_per_fire_all"] = (cpu1 - cpu0 + pg) * 1000 / len(window)
        result.metrics["writes"] = _writes(stats0, stats1, len(window), t1 - t0)
    result.notes.append(
        f"{n:,} stored; first fire {first - launched_at:.2f}s after launch"
        f" ({before['overdue']} overdue then); {len(window)} fires in {t1 - t0:.0f}s"
        + (f", {result.metrics['cpu_ms_per_fire']:.3f} ms CPU each" if window else "")
    )
    return result


def _window(earliest: float, not_before: float, settings: Settings) -> tuple[float, float]:
    """Whole minutes from a half minute (between two crowds) at or after both bounds.

    Smoke runs take their few seconds at once: there is no crowd to align to.
    """
    start = max(earliest, not_before)
    if settings.smoke:
        return start, start + settings.duration
    t0 = math.ceil((start - 30) / 60) * 60 + 30
    return t0, t0 + 60 * max(1, round(settings.duration / 60))


def _steady_lag(window: list[Record], t0: float, t1: float) -> bool:
    """Its lag did not grow across the window (the due count is not known exactly here)."""
    quarter = (t1 - t0) / 4
    first = [r for r in window if r.arrival < t0 + quarter]
    last = [r for r in window if r.arrival >= t1 - quarter]
    if not first or not last:
        return bool(window)
    return summarize(last).p50_ms <= summarize(first).p50_ms + 1000


def _vacuum(db_url: str) -> float:
    started = time.monotonic()
    with psycopg.connect(conninfo(db_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.monotonic() - started


def _stats(db_url: str) -> dict[str, Any]:
    """Rows written per table so far (pg_stat_user_tables), the WAL position, overdue rows."""
    with psycopg.connect(conninfo(db_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del"
            " FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            (list(TABLES),),
        ).fetchall()
        wal = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        overdue = conn.execute(
            "SELECT count(*) FROM schedules WHERE NOT paused AND next_at < now()"
        ).fetchone()
    return {
        "tables": {r[0]: {"ins": r[1], "upd": r[2], "hot_upd": r[3], "del": r[4]} for r in rows},
        "wal": int(wal[0]) if wal else 0,
        "overdue": int(overdue[0]) if overdue else 0,
    }


def _writes(
    before: dict[str, Any], after: dict[str, Any], fires: int, seconds: float
) -> dict[str, Any]:
    """Rows inserted, updated (of which HOT) and deleted per fire, per table; WAL bytes per fire.

    The WAL figure is the whole server's (another run on it adds to it).
    """
    per_fire: dict[str, dict[str, float]] = {}
    total = 0
    for table in TABLES:
        a, b = after["tables"].get(table, {}), before["tables"].get(table, {})
        delta = {k: a.get(k, 0) - b.get(k, 0) for k in ("ins", "upd", "hot_upd", "del")}
        total += delta["ins"] + delta["upd"] + delta["del"]
        per_fire[table] = {k: round(v / fires, 3) for k, v in delta.items()}
    return {
        "per_fire": per_fire,
        "rows_per_fire": round(total / fires, 3),
        "rows_per_s": round(total / seconds, 1),
        "wal_bytes_per_fire": round((after["wal"] - before["wal"]) / fires),
    }


def _sizes(db_url: str) -> dict[str, int]:
    """Bytes of each table (heap) and index of beatd's, and the row counts of the big ones."""
    with psycopg.connect(conninfo(db_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
        ).fetchall()
        found = {str(name): int(size) for name, size in rows}
        for table in TABLES:
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            found[f"{table}_rows"] = int(count[0]) if count else 0
    return found
