"""Issues 6 and 15's targets, checked against one run's results: met, or missed by how much."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.harness.report import Result
from bench.harness.workloads import lag_floor, steady


@dataclass(frozen=True)
class Target:
    workload: str  # beatd's workload it applies to
    what: str
    metric: str
    limit: Callable[[dict[str, Result]], float | None]  # from all results of the run
    at_most: bool = True  # False: the figure must be at least the limit


def _fixed(value: float) -> Callable[[dict[str, Result]], float]:
    return lambda _: value


def _tenth_of(system: str, workload: str, metric: str) -> Callable[[dict[str, Result]], Any]:
    def limit(results: dict[str, Result]) -> float | None:
        peer = results.get(f"{system}/{workload}")
        value = None if peer is None else peer.metrics.get(metric)
        return None if value is None else value / 10

    return limit


TARGETS = (
    Target("steady-10000", "p99 lag <= 40 ms", "lag_p99_ms", _fixed(40)),
    Target(
        "steady-10000",
        "p99 lag <= 1/10 of APScheduler 3's",
        "lag_p99_ms",
        _tenth_of("apscheduler3", "steady-10000", "lag_p99_ms"),
    ),
    Target(
        "steady-10000",
        "<= 0.15 ms CPU per fire (beatd + PostgreSQL)",
        "cpu_ms_per_fire_all",
        _fixed(0.15),
    ),
    Target("steady-10000", "keeps up", "kept_up", _fixed(1), at_most=False),
    Target("steady-100000", "keeps up", "kept_up", _fixed(1), at_most=False),
    Target("steady-100000", "p99 lag <= 100 ms", "lag_p99_ms", _fixed(100)),
    Target("steady-100000", "peak RSS <= 150 MB", "peak_rss_mb", _fixed(150)),
    Target("burst-10000", "all sent within 2 s of the minute", "seconds", _fixed(2)),
    Target("startup-100000", "first fire <= 1 s after launch", "seconds", _fixed(1)),
    Target("toml-load-10000", "10,000 TOML schedules loaded <= 1 s", "seconds", _fixed(1)),
    Target("catch-up-36x1001s", "36,000 missed fires sent <= 10 s", "seconds", _fixed(10)),
    Target("catch-up-10x3600s", "the hour's missed fires sent <= 10 s", "seconds", _fixed(10)),
)


def check(results: Sequence[Result]) -> list[str]:
    """One line per target whose workload ran: met, or missed by how much."""
    index = {f"{r.system}/{r.workload}": r for r in results if not r.skipped}
    lines = []
    for target in TARGETS:
        mine = index.get(f"beatd/{target.workload}")
        if mine is None:
            continue
        lines.append(_line(target, mine, target.limit(index)))
    lines += _floors(index)
    lines += _million(index)
    lines += _partitioned(index)
    for r in results:
        if r.system == "beatd" and not r.skipped and r.workload.startswith("failover-"):
            limit = r.metrics["lease_s"] + 1
            lines.append(
                _line(Target(r.workload, "<= lease + 1 s", "seconds", _fixed(limit)), r, limit)
            )
    return lines


def _partitioned(index: dict[str, Result]) -> list[str]:
    """Issue 15's partition targets: the fleet's steady run against the floor and one leader
    (`beatd_partitioned.compare` puts the ratios in its metrics); each takeover's time."""
    checks = []
    for key, r in sorted(index.items()):
        if key.startswith("beatd/partitioned-failover-"):
            limit = _fixed(r.metrics["lease_s"] + 1)
            checks += [
                (Target(r.workload, "median <= lease + 1 s", "seconds", limit), r),
                (Target(r.workload, "slowest partition <= lease + 1 s", "max_s", limit), r),
            ]
        elif key.startswith("beatd/partitioned-") and not key.endswith("-1x1"):
            checks += [
                (Target(r.workload, "keeps up", "kept_up", _fixed(1), at_most=False), r),
                (Target(r.workload, "p99 lag <= 2x the floor", "p99_over_floor", _fixed(2)), r),
                (Target(r.workload, "CPU/fire <= 1 leader's", "cpu_per_fire_ratio", _fixed(1)), r),
            ]
    return [_line(target, r, target.limit(index)) for target, r in checks]


def _line(target: Target, mine: Result, limit: float | None) -> str:
    value = mine.metrics.get(target.metric)
    head = f"{target.workload}: {target.what}"
    if limit is None or value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{head}: not measured"
    value = float(value)
    if target.metric == "kept_up":
        return f"{head}: {'met' if value else 'MISSED'}"
    met = value <= limit if target.at_most else value >= limit
    if met:
        return f"{head}: met ({value:.3g} vs {limit:.3g})"
    return f"{head}: MISSED ({value:.3g} vs {limit:.3g}, x{value / limit:.2f})"


def _floors(index: dict[str, Result]) -> list[str]:
    """What the same run's batched-confirm ceiling allows the steady lag to be, at best."""
    ceiling = next(
        (
            r.metrics.get("publisher_per_s")
            for key, r in index.items()
            if key.startswith("pika-batched/")
        ),
        None,
    )
    if not ceiling:
        return []
    lines = []
    for key in sorted(index):
        system, _, workload = key.partition("/")
        if system == "beatd" and workload.startswith("steady-"):
            plan = steady(int(workload.removeprefix("steady-")))
            p50, p99 = (lag_floor(plan, ceiling, p) * 1000 for p in (50, 99))
            lines.append(
                f"{workload}: lag floor at this run's batched-confirm ceiling ({ceiling:,.0f}/s): "
                f"p50 {p50:.0f} ms / p99 {p99:.0f} ms (fires sharing an instant leave one by one)"
            )
    return lines


def _million(index: dict[str, Result]) -> list[str]:
    """Issue 15's single-leader targets for each `million-N` run, against its reference run."""
    lines = []
    refs = [r for key, r in index.items() if key.startswith("beatd/million-ref-")]
    for key, mine in sorted(index.items()):
        if not key.startswith("beatd/million-") or key.startswith("beatd/million-ref-"):
            continue
        stored = f"{int(mine.metrics['n']):,} stored"
        checks = [
            Target(mine.workload, f"{stored}: first fire <= 2 s", "seconds", _fixed(2)),
            Target(mine.workload, f"{stored}: peak RSS <= 200 MB", "peak_rss_mb", _fixed(200)),
        ]
        lines += [_line(t, mine, 2 if t.metric == "seconds" else 200) for t in checks]
        if refs:
            ref = refs[0]
            theirs = ref.metrics.get("cpu_ms_per_fire")
            what = f"{stored}: CPU per fire <= 1.25x of {int(ref.metrics['n']):,} stored"
            target = Target(mine.workload, what, "cpu_ms_per_fire", _fixed(0))
            lines.append(_line(target, mine, None if theirs is None else 1.25 * theirs))
    return lines
