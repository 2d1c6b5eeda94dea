"""Advice on schedules that are valid but most likely not what was meant.

`add` and `validate` print these as warnings; nothing is refused. Pure: the
schedule and the time now in, one line per finding out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

from beatd import timing
from beatd.codec import format_instant
from beatd.durations import format_duration
from beatd.model import Every, Once, Schedule

GAPS_CHECKED = 8  # fires after now whose spacing the jitter warning looks at


def warnings_for(schedule: Schedule, now: datetime) -> list[str]:
    """What is valid but most likely not meant, one line each (add and validate print them)."""
    lines: list[str] = []
    spec = schedule.spec
    if isinstance(spec, Once) and spec.at <= now:
        lines.append(
            f"schedule {schedule.name!r}: at: {format_instant(spec.at)} is in the past: "
            "it is recorded as missed and never sent"
        )
    if schedule.jitter:
        gap = _shortest_gap(schedule, now)
        if gap is not None and schedule.jitter > gap:
            lines.append(
                f"schedule {schedule.name!r}: jitter: {format_duration(schedule.jitter)} is "
                f"longer than the time between its fires ({format_duration(gap)}): a fire "
                "may go out after the next one's instant"
            )
    return lines


def _shortest_gap(schedule: Schedule, now: datetime) -> timedelta | None:
    if isinstance(schedule.spec, Every):
        return schedule.spec.period
    instants: list[datetime] = []
    at = timing.next_after(schedule, now)
    while at is not None and len(instants) < GAPS_CHECKED:
        instants.append(at)
        at = timing.next_after(schedule, at)
    return min((b - a for a, b in pairwise(instants)), default=None)
