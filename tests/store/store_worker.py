"""A separate process for the concurrency tests: open a store, wait for "go", act.

    python store_worker.py URL GO_FILE load N [PREFIX]
    python store_worker.py URL GO_FILE put NAME
    python store_worker.py URL GO_FILE acquire HOLDER ROUNDS INTERVAL

Prints "ready" once the store is open, waits until GO_FILE exists, then
prints one JSON line with the result.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta

from beatd.model import Every, Schedule
from beatd.store import open_store

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def file_schedules(n: int, prefix: str) -> list[Schedule]:
    return [
        Schedule(name=f"{prefix}{i:05d}", spec=Every(timedelta(seconds=60 + i)), task="t")
        for i in range(n)
    ]


def main(url: str, go: str, command: str, *args: str) -> None:
    store = open_store(url)
    store.change_count()  # connect before the race
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    result: object
    if command == "load":
        outcome = store.load_file(file_schedules(int(args[0]), args[1]), lambda s: T0)
        result = [len(outcome.added), len(outcome.changed), len(outcome.removed)]
    elif command == "put":
        time.sleep(0.05)  # land inside the reconciliation
        store.put(Schedule(name=args[0], spec=Every(timedelta(minutes=1)), task="t"), T0,
                  replace=False)  # fmt: skip
        result = "ok"
    else:
        holder, rounds, interval = args[0], int(args[1]), float(args[2])
        start, wins = time.monotonic(), []
        for round_ in range(rounds):
            time.sleep(max(0.0, start + round_ * interval - time.monotonic()))
            lease = store.acquire(holder, timedelta(seconds=interval / 2), holder)
            if lease is not None:
                wins.append([round_, lease.epoch])
        result = wins
    store.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
