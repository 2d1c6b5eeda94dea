"""What the pages show that takes computing: fire timelines with DST changes, the lag chart.

Pure functions of values already read (no Flask, no store), so they are
tested as tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from beatd import timing
from beatd.codec import schedule_to_table
from beatd.model import Fire, FireRecord, Outcome, Schedule, Spec


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One upcoming fire; `change` says when the zone's offset moved since the row before."""

    utc: datetime
    local: datetime
    change: str | None = None


def _offset(at: datetime) -> str:
    delta = at.utcoffset() or timedelta(0)
    sign = "-" if delta < timedelta(0) else "+"
    minutes = abs(int(delta.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _change(before: datetime, after: datetime) -> str:
    gained = (after.utcoffset() or timedelta(0)) - (before.utcoffset() or timedelta(0))
    way = "forward" if gained > timedelta(0) else "back"
    minutes = abs(int(gained.total_seconds())) // 60
    size = f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"
    return (
        f"clocks go {way} {size} before this fire: {before.tzname()} ({_offset(before)})"
        f" → {after.tzname()} ({_offset(after)})"
    )


def timeline(fires: Sequence[Fire], zone: ZoneInfo, now: datetime) -> list[TimelineRow]:
    """The fires with local and UTC times, marking each DST change (offset change) before one."""
    rows: list[TimelineRow] = []
    before = now.astimezone(zone)
    for fire in fires:
        local = fire.at.astimezone(zone)
        moved = local.utcoffset() != before.utcoffset()
        rows.append(TimelineRow(fire.at, local, _change(before, local) if moved else None))
        before = local
    return rows


@lru_cache(maxsize=4096)
def words(spec: Spec) -> str:
    """The spec in words (cron through cron-descriptor, which reads its locale file on every
    call: about 1.5 ms, so a page of 50 would spend 75 ms on it without this cache)."""
    return timing.describe(spec)


def definition(schedule: Schedule) -> list[tuple[str, str]]:
    """The schedule's canonical table as (key, text) rows: JSON values written as JSON."""
    return [
        (key, value if isinstance(value, str) else json.dumps(value))
        for key, value in schedule_to_table(schedule).items()
    ]


def outcome(record: FireRecord) -> str:
    """The outcome as `beatd history` words it: a trigger that went out is `manual`."""
    return "manual" if record.manual and record.outcome is Outcome.SENT else str(record.outcome)


# -- the lag chart ------------------------------------------------------------------

BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
CHART_HEIGHT = 80  # px of the tallest bar


@dataclass(frozen=True, slots=True)
class Bar:
    label: str  # the bucket's upper bound, e.g. "≤ 50 ms"
    count: int
    height: int  # px, proportional to count


@dataclass(frozen=True, slots=True)
class LagChart:
    """How late recent fires were confirmed, as a histogram and three figures (ms)."""

    count: int
    p50: float
    p99: float
    worst: float
    bars: tuple[Bar, ...]


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank percentile of ascending values (0 for none)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _label(ms: int) -> str:
    return f"≤ {ms / 1000:g} s" if ms >= 1000 else f"≤ {ms} ms"


def lag_chart(lags_seconds: Sequence[float]) -> LagChart:
    """The histogram of lags over BUCKETS_MS plus one bucket for anything slower."""
    ordered = sorted(max(0.0, lag) * 1000 for lag in lags_seconds)
    counts = [0] * (len(BUCKETS_MS) + 1)
    for ms in ordered:
        counts[next((i for i, top in enumerate(BUCKETS_MS) if ms <= top), len(BUCKETS_MS))] += 1
    labels = [_label(top) for top in BUCKETS_MS] + [f"> {BUCKETS_MS[-1] / 1000:g} s"]
    tallest = max(counts) or 1
    bars = tuple(
        Bar(label, count, round(CHART_HEIGHT * count / tallest))
        for label, count in zip(labels, counts, strict=True)
    )
    worst = ordered[-1] if ordered else 0.0
    return LagChart(len(ordered), percentile(ordered, 50), percentile(ordered, 99), worst, bars)
