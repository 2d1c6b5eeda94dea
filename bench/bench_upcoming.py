"""`beatd validate` and `beatd upcoming` over 100,000 mixed schedules (target: a few seconds).

    .venv/bin/python bench/bench_upcoming.py [--schedules N] [--limit N] [--runs N]

Writes a config file of N schedules, a quarter each of interval, cron
(several zones, some with H), rrule and once schedules, then times:
- the commands as a user runs them (`beatd validate`, `beatd upcoming`),
  each a fresh process: wall time and CPU time (user + system; on a shared
  machine the CPU figure is the one that does not move with the load);
- `upcoming()` alone over the parsed schedules (the merge), the median of runs.

Figures on the 2-core development machine (CPU seconds, 100,000 schedules):
validate 26 s and upcoming 70 s before (rrules walked from 1970 per schedule,
every check repeated per schedule, `upcoming` reading every schedule twice);
after: see the README (bench/bench_upcoming.py prints them).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from beatd.codec import Defaults, schedule_from_table
from beatd.model import Schedule, Source
from beatd.upcoming import upcoming

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
CRONS = ("*/5 * * * *", "0 9-17 * * MON-FRI", "30 2 * * *", "H/15 * * * *", "0 0 1 * *")
RRULES = ("FREQ=DAILY;BYHOUR=9", "FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=18", "FREQ=MONTHLY;BYDAY=-1FR")


def table(i: int, future: datetime) -> dict[str, object]:
    """Schedule i of the mix, as its TOML table."""
    out: dict[str, object] = {"task": "bench.task", "timezone": ZONES[i % len(ZONES)]}
    kind = i % 4
    if kind == 0:
        out["every"] = f"{30 + i % 3600}s"
    elif kind == 1:
        out["cron"] = CRONS[i % len(CRONS)]
    elif kind == 2:
        out["rrule"] = RRULES[i % len(RRULES)]
    else:
        out["at"] = (future + timedelta(minutes=i)).isoformat()
    return out


def mixed(count: int) -> list[Schedule]:
    defaults = Defaults()
    return [
        schedule_from_table(f"s{i:06}", table(i, NOW), defaults, Source.FILE) for i in range(count)
    ]


def write_config(path: Path, count: int) -> None:
    future = datetime.now(UTC) + timedelta(days=30)  # the once schedules are still to come
    lines = ["[beatd]", f'database = "sqlite:///{path.parent / "absent.db"}"', ""]
    for i in range(count):
        lines.append(f"[schedules.s{i:06}]")
        lines.extend(
            f"{key} = {value!r}".replace("'", '"') for key, value in table(i, future).items()
        )
        lines.append("")
    path.write_text("\n".join(lines))


CLI = "import sys; from beatd.cli.main import main; sys.exit(main())"


def run_cli(config: Path, *argv: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one `beatd` command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CLI, "--config", str(config), *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"beatd {' '.join(argv)} failed: {done.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "beatd.toml"
        write_config(config, args.schedules)
        size = os.path.getsize(config) / 1e6
        print(f"{args.schedules} schedules, {size:.1f} MB of TOML")
        for argv in (("validate",), ("upcoming",), ("upcoming", "--limit", str(args.limit))):
            wall, cpu = run_cli(config, *argv)
            verdict = "ok" if cpu < 5 else "MISSED"
            print(f"  beatd {' '.join(argv):<22} {wall:6.2f} s wall, {cpu:6.2f} s CPU ({verdict})")

    schedules = mixed(args.schedules)
    timings = []
    for _ in range(args.runs):
        started = time.process_time()
        fires = upcoming(schedules, NOW, limit=args.limit)
        timings.append(time.process_time() - started)
    assert len(fires) == args.limit
    print(
        f"  upcoming(limit={args.limit}) alone: median {statistics.median(timings):.3f} s CPU "
        f"of {args.runs} runs (min {min(timings):.3f}, max {max(timings):.3f})"
    )


if __name__ == "__main__":
    main()
