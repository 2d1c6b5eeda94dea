"""The schedules each workload runs, identical for every system.

Interval schedules fire at `offset + k * period` seconds after the Unix epoch
(UTC), periods spread evenly over [low, high] and phases spread over the
period, so 10,000 schedules over 10-60 s make about 362 fires per second with
no thundering minute. Every run also has one probe schedule (every second,
on its own queue): its first message says the system is loaded and firing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

TASK = "bench.tasks.noop"


@dataclass(frozen=True, slots=True)
class Interval:
    name: str
    period: int  # seconds
    offset: int  # seconds; fires at offset + k * period after the epoch

    def count_between(self, start: float, end: float) -> int:
        """Instants in [start, end)."""
        return max(
            0,
            math.ceil((end - self.offset) / self.period)
            - math.ceil((start - self.offset) / self.period),
        )

    def last_at_or_before(self, t: float) -> int:
        return self.offset + math.floor((t - self.offset) / self.period) * self.period


@dataclass(frozen=True, slots=True)
class Burst:
    """`n` schedules that all fire on every `every`-second boundary (60: cron `* * * * *`)."""

    n: int
    every: int = 60

    @property
    def names(self) -> list[str]:
        return [f"b{i:06d}" for i in range(self.n)]

    @property
    def cron(self) -> str:
        return "* * * * *" if self.every == 60 else f"*/{self.every} * * * * *"

    def next_boundary(self, t: float, margin: float) -> int:
        """The first boundary at least `margin` seconds after t."""
        return math.ceil((t + margin) / self.every) * self.every


PROBE = Interval("bench-probe", 1, 0)


def steady(n: int, low: int = 10, high: int = 60) -> list[Interval]:
    span = high - low + 1
    schedules = []
    for i in range(n):
        period = low + i % span
        schedules.append(Interval(f"s{i:06d}", period, (i * 7919) % period))
    return schedules


def demand_per_s(schedules: list[Interval]) -> float:
    return sum(1 / s.period for s in schedules)


def expected_between(schedules: list[Interval], start: float, end: float) -> int:
    return sum(s.count_between(start, end) for s in schedules)


def lag_floor(schedules: list[Interval], rate: float, p: float, seconds: int = 3600) -> float:
    """Seconds of lag at percentile `p` that no publisher at `rate` msgs/s can beat.

    Instants are whole seconds, so every fire due in one second shares one
    instant; at `rate` the k-th of them leaves (k / rate) s after it.
    """
    per_second = [0] * seconds
    for s in schedules:
        for t in range(s.offset % s.period, seconds, s.period):
            per_second[t] += 1
    lags = sorted(k / rate for count in per_second for k in range(1, count + 1))
    return lags[min(len(lags) - 1, int(p / 100 * len(lags)))]


def iso(t: float) -> str:
    """An epoch instant as ISO-8601 UTC with Z, the form of the `beatd-scheduled-for` header."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
