"""The two workloads every scheduler takes part in, measured the same way for each.

A system under test is anything with `launch(plan) -> Launched`: it starts
one scheduler process that publishes the plan's schedules to the plan's
queue (and the probe to the probe queue), each message carrying its
scheduled instant in the `beatd-scheduled-for` header. The harness owns the
consumer, the clock and the figures.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.harness import procs, profile
from bench.harness.consumer import Consumer, Record
from bench.harness.report import Result
from bench.harness.services import backend_pids, fresh_database, fresh_queues
from bench.harness.stats import summarize
from bench.harness.workloads import PROBE, Burst, Interval, demand_per_s, expected_between
from bench.harness.workloads import steady as steady_schedules


@dataclass(frozen=True)
class Settings:
    amqp_url: str
    pg_admin_url: str
    workdir: Path
    smoke: bool
    duration: float  # steady measuring window, seconds
    warmup: float  # after the first probe message, before the window
    ready_timeout: float  # launch to first probe message, at most
    drain: float  # after the window, wait at most this for late fires
    burst_timeout: float  # boundary to last burst fire, at most
    log: Callable[[str], None] = print
    profile_dir: Path | None = None  # set: py-spy the scheduler over each steady window


@dataclass(frozen=True)
class Plan:
    """What one scheduler process must do."""

    queue: str
    probe_queue: str
    db_url: str
    workdir: Path
    intervals: list[Interval] = field(default_factory=list)
    burst: Burst | None = None
    probe: Interval = PROBE


@dataclass
class Launched:
    proc: subprocess.Popen[bytes]
    log: Path
    pid: int = 0  # the process whose CPU and RSS count (default: proc.pid)
    cleanup: Callable[[], None] | None = None
    others: list[Launched] = field(default_factory=list)  # more instances of one system

    def __post_init__(self) -> None:
        self.pid = self.pid or self.proc.pid

    @property
    def pids(self) -> list[int]:
        return [self.pid, *(o.pid for o in self.others)]

    def cpu_seconds(self) -> float | None:
        """CPU of every instance, summed: the system's cost; None once one is gone."""
        each = [procs.cpu_seconds(pid) for pid in self.pids]
        return None if None in each else sum(c for c in each if c is not None)

    def peak_rss_mb(self, what: str = "VmHWM") -> float | None:
        """The largest instance's: what one machine of the fleet must hold."""
        each = [procs.peak_rss_mb(pid, what) for pid in self.pids]
        return None if None in each else max(r for r in each if r is not None)


class System(Protocol):
    name: str

    def unavailable(self) -> str | None:
        """None when the system can run here, else why not (one line)."""
        ...

    def launch(self, plan: Plan, settings: Settings) -> Launched: ...


@contextmanager
def environment(settings: Settings) -> Iterator[tuple[str, str, str, Path, Consumer]]:
    """A fresh database, two fresh queues, a running consumer, a scratch directory."""
    with (
        fresh_database(settings.pg_admin_url) as db_url,
        fresh_queues(settings.amqp_url) as (queue, probe_queue),
        tempfile.TemporaryDirectory(prefix="run-", dir=settings.workdir) as scratch,
    ):
        limit = settings.ready_timeout + settings.duration + settings.drain
        limit += settings.burst_timeout + settings.warmup + 120
        consumer = Consumer(settings.amqp_url, [queue, probe_queue], Path(scratch), limit)
        with consumer:
            yield db_url, queue, probe_queue, Path(scratch), consumer
        if consumer.died:
            raise RuntimeError(f"the consumer lost the broker mid-run: {consumer.died}")


def wait_for(
    consumer: Consumer,
    done: Callable[[list[Record]], bool],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> bool:
    """Poll the consumer until done(fresh records) says so; False on timeout or process exit.

    `done` sees each poll's new records once (see `Count`), so waiting costs
    the harness O(messages), not O(messages x polls).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(consumer.poll()):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return done(consumer.poll())


class Count:
    """done() for wait_for: true once `target` records matching `match` have arrived."""

    def __init__(self, match: Callable[[Record], bool], target: int) -> None:
        self.match, self.target, self.seen = match, target, 0

    def __call__(self, fresh: list[Record]) -> bool:
        self.seen += sum(1 for r in fresh if self.match(r))
        return self.seen >= self.target


def _probe_seen(probe_queue: str) -> Count:
    return Count(lambda r: r.queue == probe_queue, 1)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def lag_metrics(records: list[Record]) -> dict[str, Any]:
    s = summarize(records)
    return {
        "lag_p50_ms": _nan_to_none(s.p50_ms),
        "lag_p99_ms": _nan_to_none(s.p99_ms),
        "lag_max_ms": _nan_to_none(s.max_ms),
        "delivered": s.count,
        "duplicates": s.duplicates,
    }


def _launch_and_wait(
    system: System, plan: Plan, settings: Settings, consumer: Consumer
) -> tuple[Launched, float]:
    started = time.time()
    launched = system.launch(plan, settings)
    if not wait_for(consumer, _probe_seen(plan.probe_queue), settings.ready_timeout, launched.proc):
        _finish(launched)
        raise RuntimeError(
            f"{system.name} sent no probe within {settings.ready_timeout:.0f}s:\n"
            + procs.tail(launched.log)
        )
    return launched, time.time() - started


def _finish(launched: Launched) -> None:
    for each in [launched, *launched.others]:
        procs.stop(each.proc)
        if each.cleanup is not None:
            each.cleanup()


def steady(system: System, n: int, settings: Settings, workload: str = "") -> Result:
    """N interval schedules; lag, CPU and RSS over a window after warm-up.

    Lag is taken over the messages that *arrived* in the window, so a system
    that falls behind shows the lag it had then (a window of scheduled
    instants would leave out exactly its latest fires). `complete` counts
    the fires scheduled in the window that arrived by the end of the drain,
    against the grid (exact for systems whose intervals do not drift).
    A system of several instances (`Launched.others`) counts the CPU of all
    and the peak RSS of the largest. `workload` names the result (default
    `steady-N`).
    """
    intervals = steady_intervals(n, settings)
    result = Result(system.name, workload or f"steady-{n}")
    with environment(settings) as (db_url, queue, probe_queue, scratch, consumer):
        plan = Plan(queue, probe_queue, db_url, scratch, intervals=intervals)
        launched, ready_s = _launch_and_wait(system, plan, settings, consumer)
        try:
            settings.log(f"  {system.name}: ready after {ready_s:.1f}s; warming up")
            procs.sleep_until(time.time() + settings.warmup)
            t0 = time.time()
            cpu0 = launched.cpu_seconds() or 0.0
            pg0 = procs.cpu_of(backend_pids(settings.pg_admin_url, db_url))
            stacks = None
            if settings.profile_dir is not None:
                stacks = settings.profile_dir / f"profile-{system.name}-{result.workload}.txt"
                profiler = profile.Recording(launched.pids, settings.duration, stacks)
            procs.sleep_until(t0 + settings.duration)
            t1 = time.time()
            cpu1 = launched.cpu_seconds()
            pg1 = procs.cpu_of(backend_pids(settings.pg_admin_url, db_url))
            rss = launched.peak_rss_mb()
            rss_now = launched.peak_rss_mb("VmRSS")  # the peak includes loading
            expected = expected_between(intervals, t0, t1)
            if stacks is not None:
                profiler.finish()
                result.metrics["profile"] = profile.summary(stacks)
                result.notes.append(f"profiled (py-spy, 100 Hz): {stacks.name}")

            def scheduled_in(r: Record) -> bool:
                return r.queue == queue and r.scheduled is not None and t0 <= r.scheduled < t1

            wait_for(consumer, Count(scheduled_in, expected), settings.drain, launched.proc)
        finally:
            _finish(launched)
        consumer.stop()
    window = [r for r in consumer.records if r.queue == queue and t0 <= r.arrival < t1]
    complete = sum(1 for r in consumer.records if scheduled_in(r))
    minutes = (t1 - t0) / 60
    result.metrics.update(lag_metrics(window))
    result.metrics.update(
        {
            "n": n,
            "window_s": round(t1 - t0, 3),
            "ready_s": round(ready_s, 3),
            "expected": expected,
            "complete": complete,
            "demand_per_s": round(demand_per_s(intervals), 1),
            "fires_per_s": len(window) / (t1 - t0),
            "cpu_s_per_min": None if cpu1 is None else (cpu1 - cpu0) / minutes,
            "pg_cpu_s_per_min": procs.cpu_delta(pg0, pg1) / minutes,
            "peak_rss_mb": rss,
            "rss_at_end_mb": rss_now,
        }
    )
    first, last = _quarters(window, t0, t1)
    kept = _kept_up(len(window), expected, first, last)
    result.metrics.update(
        {"kept_up": kept, "lag_p50_first_quarter_ms": first, "lag_p50_last_quarter_ms": last}
    )
    result.notes.append(
        f"{len(window)} arrived for {expected} due; {complete}/{expected} of those due"
        f" arrived by +{settings.drain:.0f}s; {'kept up' if kept else 'FELL BEHIND'}"
    )
    cpu = result.metrics["cpu_s_per_min"]
    if cpu is not None and window:
        result.metrics["cpu_ms_per_fire"] = cpu * minutes * 1000 / len(window)
        pg = result.metrics["pg_cpu_s_per_min"]
        result.metrics["cpu_ms_per_fire_all"] = (cpu + pg) * minutes * 1000 / len(window)
    return result


def steady_intervals(n: int, settings: Settings) -> list[Interval]:
    """The `steady` workload's schedules (smoke runs: periods of 1-3 s, so seconds see fires)."""
    low, high = (1, 3) if settings.smoke else (10, 60)
    return steady_schedules(n, low, high)


def _quarters(window: list[Record], t0: float, t1: float) -> tuple[float | None, float | None]:
    """Lag p50 of the first and last quarters of the window: growing, steady or catching up."""
    quarter = (t1 - t0) / 4
    first = [r for r in window if r.arrival < t0 + quarter]
    last = [r for r in window if r.arrival >= t1 - quarter]
    return (
        _nan_to_none(summarize(first).p50_ms) if first else None,
        _nan_to_none(summarize(last).p50_ms) if last else None,
    )


def _kept_up(arrived: int, expected: int, first: float | None, last: float | None) -> bool:
    """Sent (nearly) all that fell due, and its lag did not grow across the window."""
    if expected == 0 or arrived < 0.97 * expected:
        return False
    if first is None or last is None:
        return True
    return last <= first + 1000


def burst(system: System, n: int, settings: Settings) -> Result:
    """N schedules due at the same instant: time from that instant to the last fire."""
    spec = Burst(n, every=5 if settings.smoke else 60)
    result = Result(system.name, f"burst-{n}")
    with environment(settings) as (db_url, queue, probe_queue, scratch, consumer):
        plan = Plan(queue, probe_queue, db_url, scratch, burst=spec)
        launched, ready_s = _launch_and_wait(system, plan, settings, consumer)
        try:
            boundary = spec.next_boundary(time.time(), margin=2.0)
            settings.log(f"  {system.name}: ready after {ready_s:.1f}s; burst at {boundary}")
            procs.sleep_until(boundary - 1)
            cpu0 = procs.cpu_seconds(launched.pid) or 0.0
            pg0 = procs.cpu_of(backend_pids(settings.pg_admin_url, db_url))

            def of_burst(r: Record) -> bool:
                # Celery's smoke burst is an interval (crontab has no seconds), which
                # drifts by its lag: count the fire that belongs to this boundary.
                at = r.scheduled
                return r.queue == queue and at is not None and 0 <= at - boundary < spec.every / 2

            limit = boundary + settings.burst_timeout - time.time()
            wait_for(consumer, Count(of_burst, n), limit, launched.proc)
            t1 = time.time()
            cpu1 = procs.cpu_seconds(launched.pid)
            pg1 = procs.cpu_of(backend_pids(settings.pg_admin_url, db_url))
            rss = procs.peak_rss_mb(launched.pid)
        finally:
            _finish(launched)
    fires = [r for r in consumer.records if of_burst(r)]
    result.metrics.update(lag_metrics(fires))
    minutes = (t1 - boundary + 1) / 60
    last = max((r.arrival for r in fires), default=None)
    seconds = None if last is None else last - boundary
    result.metrics.update(
        {
            "n": n,
            "ready_s": round(ready_s, 3),
            "seconds": seconds,
            "fires_per_s": (len(fires) / seconds) if seconds else None,
            "cpu_s_per_min": None if cpu1 is None else (cpu1 - cpu0) / minutes,
            "pg_cpu_s_per_min": procs.cpu_delta(pg0, pg1) / minutes,
            "peak_rss_mb": rss,
        }
    )
    if len(fires) < n:
        result.notes.append(
            f"only {len(fires)}/{n} within {settings.burst_timeout:.0f}s"
            " (seconds = to the last of those)"
        )
    else:
        result.notes.append(f"{n}/{n}; seconds = boundary to last arrival")
    return result
