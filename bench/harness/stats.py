"""Percentiles and the summary of one run's lags."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.harness.consumer import Record


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks; q in [0, 100]."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class LagSummary:
    count: int
    duplicates: int  # messages whose id was seen before
    p50_ms: float
    p99_ms: float
    max_ms: float
    first_arrival: float | None
    last_arrival: float | None


def summarize(records: Sequence[Record]) -> LagSummary:
    lags = sorted(r.lag for r in records if r.lag is not None)
    ids = Counter(r.message_id for r in records)
    return LagSummary(
        count=len(records),
        duplicates=sum(n - 1 for n in ids.values() if n > 1),
        p50_ms=percentile(lags, 50) * 1000,
        p99_ms=percentile(lags, 99) * 1000,
        max_ms=(lags[-1] * 1000) if lags else math.nan,
        first_arrival=min((r.arrival for r in records), default=None),
        last_arrival=max((r.arrival for r in records), default=None),
    )


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)
