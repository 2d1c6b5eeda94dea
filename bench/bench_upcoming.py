"""How long `upcoming(limit=1000)` takes over 10,000 mixed schedules (target: under 2 s).

    .venv/bin/python bench/bench_upcoming.py [--schedules N] [--limit N] [--runs N]

Schedules are built through the codec, as the config file would build them:
a quarter each of interval, cron (several zones), rrule and once schedules.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from beatd.codec import Defaults, schedule_from_table
from beatd.model import Schedule, Source
from beatd.upcoming import upcoming

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
CRONS = ("*/5 * * * *", "0 9-17 * * MON-FRI", "30 2 * * *", "H/15 * * * *", "0 0 1 * *")
RRULES = ("FREQ=DAILY;BYHOUR=9", "FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=18", "FREQ=MONTHLY;BYDAY=-1FR")


def mixed(count: int) -> list[Schedule]:
    defaults = Defaults()
    schedules = []
    for i in range(count):
        table: dict[str, object] = {"task": "bench.task", "timezone": ZONES[i % len(ZONES)]}
        kind = i % 4
        if kind == 0:
            table["every"] = f"{30 + i % 3600}s"
        elif kind == 1:
            table["cron"] = CRONS[i % len(CRONS)]
        elif kind == 2:
            table["rrule"] = RRULES[i % len(RRULES)]
        else:
            table["at"] = (NOW + timedelta(minutes=i)).isoformat()
        schedules.append(schedule_from_table(f"s{i:05}", table, defaults, Source.FILE))
    return schedules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    schedules = mixed(args.schedules)
    built = time.perf_counter() - started
    timings = []
    for _ in range(args.runs):
        started = time.perf_counter()
        fires = upcoming(schedules, NOW, limit=args.limit)
        timings.append(time.perf_counter() - started)
    assert len(fires) == args.limit
    median = statistics.median(timings)
    print(f"built {args.schedules} schedules through the codec in {built:.2f} s")
    print(
        f"upcoming(limit={args.limit}) over {args.schedules} schedules: "
        f"median {median:.3f} s of {args.runs} runs "
        f"(min {min(timings):.3f} s, max {max(timings):.3f} s); target < 2 s: "
        f"{'ok' if median < 2 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
