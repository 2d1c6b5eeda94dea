"""Celery's side of the `beatd import celery` test, run in the import venv (Celery there).

stdin: {"until": ISO, "last_run": {NAME: ISO}}; stdout: {NAME: [ISO, ...]}, the fires
Celery itself computes for each beat_schedule entry of celery_beat_app: `remaining_estimate`
with beat's last_run_at at each fire and now at that instant, as beat runs them.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

import celery_beat_app
from celery.schedules import schedule

MAX_FIRES = 20_000


def fires(sched: object, last: datetime, until: datetime) -> list[str]:
    clock = [last]
    sched.nowfun = lambda: clock[0]  # type: ignore[attr-defined]
    found: list[str] = []
    while len(found) < MAX_FIRES:
        clock[0] = last
        nxt = last.astimezone(UTC) + sched.remaining_estimate(last)  # type: ignore[attr-defined]
        if nxt > until:
            break
        found.append(nxt.isoformat())
        last = nxt
    return found


def main() -> None:
    request = json.load(sys.stdin)
    until = datetime.fromisoformat(request["until"])
    app = celery_beat_app.app
    out = {}
    for name, last in request["last_run"].items():
        sched = app.conf.beat_schedule[name]["schedule"]
        if isinstance(sched, float | int | timedelta):
            sched = schedule(sched)
        sched.app = app
        out[name] = fires(sched, datetime.fromisoformat(last), until)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
