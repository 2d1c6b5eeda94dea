"""CPU cost per fire of the pure planning path: microseconds per call.

    .venv/bin/python bench/bench_plan.py [--repeats 5] [--calls 2000]

One interval schedule (`every = "17s"`, celery format, built through the
codec as the config file builds it), decided the way the tick decides it:
one on-time instant, `now` a few milliseconds after it, the leader's term
begun an hour earlier and a 0.5 s horizon. Every call gets its own instant,
so no figure is a cache hit on a repeated argument. Each figure is the
median over repeats of the mean per call; it runs in a few seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beatd.codec import Defaults, schedule_from_table
from beatd.ids import fire_id
from beatd.model import Schedule, Source, StoredSchedule
from beatd.planner import plan
from beatd.publish.messages import build_message
from beatd.timing import next_after

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PERIOD = timedelta(seconds=17)
LATE = timedelta(milliseconds=3)
LOOKAHEAD = timedelta(milliseconds=500)


def schedule() -> Schedule:
    table: dict[str, object] = {"every": "17s", "task": "bench.tasks.noop"}
    return schedule_from_table("bench-17s", table, Defaults(), Source.FILE)


def per_call(run: Callable[[], None], calls: int, repeats: int) -> float:
    """Median over `repeats` of the mean microseconds per call."""
    run()  # warm caches: compiled specs, zone data
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        samples.append((time.perf_counter() - began) / calls * 1e6)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    s = schedule()
    first = next_after(s, START)
    assert first is not None
    instants = [first + i * PERIOD for i in range(args.calls)]
    term = START - timedelta(hours=1)
    due = [StoredSchedule(s, t, t - PERIOD, 7, False, None, 1, term) for t in instants]

    def plans() -> None:
        for stored in due:
            assert stored.next_at is not None
            now = stored.next_at + LATE
            plan(stored, now, build_message, since=term, horizon=now + LOOKAHEAD)

    def messages() -> None:
        for t in instants:
            build_message(s, t, t)

    def fire_ids() -> None:
        for t in instants:
            fire_id(s.name, t)

    def nexts() -> None:
        for t in instants:
            next_after(s, t)

    rows = [
        ("planner.plan", per_call(plans, args.calls, args.repeats)),
        ("messages.build_message", per_call(messages, args.calls, args.repeats)),
        ("ids.fire_id", per_call(fire_ids, args.calls, args.repeats)),
        ("timing.next_after", per_call(nexts, args.calls, args.repeats)),
    ]
    for name, micros in rows:
        print(f"{name:<24} {micros:8.2f} µs/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
