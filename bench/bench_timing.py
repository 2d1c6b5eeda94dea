"""Next-fire evaluations per second: beatd.timing.next_after beside croniter's get_next.

    .venv/bin/python bench/bench_timing.py [--repeats 5] [--quick]

For each expression and zone, both engines answer "next fire after t" for the
same list of start instants t: ours through `next_after(schedule, t)`,
croniter through one pre-built iterator per expression and
`get_next(datetime, start_time=t in the zone)` (its own tz handling, which is
wrong on some DST days; it is here as the speed yardstick). Each figure is
the median of several repeats; the ratio is ours / croniter (target >= 0.5).

Two workloads: *typical* (starts spread over a year, UTC and Europe/Berlin)
and *DST-heavy* (starts every 7 minutes across the days around every
transition of 2024-2027 in America/New_York and Australia/Lord_Howe).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from croniter import croniter

from beatd.model import Cron, Schedule
from beatd.timing import next_after

TYPICAL = ["*/5 * * * *", "30 2 * * *", "0 9 * * MON-FRI", "0 0 1 * *"]
DST_HEAVY = ["*/5 * * * *", "*/20 * * * *", "30 2 * * *", "30 1 * * *", "0 9 * * MON-FRI"]


def typical_starts(count: int) -> list[datetime]:
    rng = random.Random(20261127)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [base + timedelta(seconds=rng.randrange(365 * 86400)) for _ in range(count)]


def transition_starts(zone: ZoneInfo, per_transition: int) -> list[datetime]:
    starts: list[datetime] = []
    u = datetime(2024, 1, 1, tzinfo=UTC)
    prev = u.astimezone(zone).utcoffset()
    while u.year < 2028:
        off = u.astimezone(zone).utcoffset()
        if off != prev:
            first = u - timedelta(hours=30)
            starts += [first + timedelta(minutes=7 * i) for i in range(per_transition)]
            prev = off
        u += timedelta(hours=1)
    return starts


def rate(run: Callable[[], None], calls: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        samples.append(calls / (time.perf_counter() - began))
    return statistics.median(samples)


def measure(expr: str, zone: ZoneInfo, starts: list[datetime], repeats: int) -> tuple[float, float]:
    schedule = Schedule("bench", Cron(expr), "t", timezone=zone)
    local_starts = [s.astimezone(zone) for s in starts]
    iterator = croniter(expr, local_starts[0], ret_type=datetime)

    def ours() -> None:
        for s in starts:
            next_after(schedule, s)

    def theirs() -> None:
        for s in local_starts:
            iterator.get_next(datetime, start_time=s)

    ours()  # warm caches: parsed expression, zone transitions
    theirs()
    return rate(ours, len(starts), repeats), rate(theirs, len(starts), repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer starts, for CI smoke runs")
    args = parser.parse_args()
    count = 300 if args.quick else 2000
    rows: list[tuple[str, str, str, float, float]] = []
    for zone_name in ("UTC", "Europe/Berlin"):
        zone, starts = ZoneInfo(zone_name), typical_starts(count)
        rows.extend(
            ("typical", expr, zone_name, *measure(expr, zone, starts, args.repeats))
            for expr in TYPICAL
        )
    for zone_name in ("America/New_York", "Australia/Lord_Howe"):
        zone = ZoneInfo(zone_name)
        starts = transition_starts(zone, 60 if args.quick else 400)
        rows.extend(
            ("dst-heavy", expr, zone_name, *measure(expr, zone, starts, args.repeats))
            for expr in DST_HEAVY
        )

    print(
        f"{'workload':<10} {'expression':<18} {'zone':<20} {'ours/s':>10} {'croniter/s':>11} ratio"
    )
    ratios = []
    for workload, expr, zone_name, ours, theirs in rows:
        ratios.append(ours / theirs)
        print(
            f"{workload:<10} {expr:<18} {zone_name:<20} {ours:>10,.0f} {theirs:>11,.0f}"
            f" {ours / theirs:5.2f}"
        )
    print(
        f"minimum ratio {min(ratios):.2f}, median {statistics.median(ratios):.2f} (target >= 0.50)"
    )
    return 0 if min(ratios) >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
