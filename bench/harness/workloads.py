"""The schedules each workload runs, identical for every system.

Interval schedules fire at `offset + k * period` seconds after the Unix epoch
(UTC), periods spread evenly over [low, high] and phases spread over the
period, so 10,000 schedules over 10-60 s make about 362 fires per second with
no thundering minute. Every run also has one probe schedule (every second,
on its own queue): its first message says the system is loaded and firing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
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


@dataclass(frozen=True, slots=True)
class StoredMix:
    """The `million` workload's schedules: `stored` of them, of which few fall due in a window.

    The frequent part (`hot`, intervals of 10-60 s, as `steady`) and `crowd`
    every-minute crons make the due rate of the reference run, which stores
    only those (`small` in all). The big run stores the same hot intervals
    and, instead of the crowd, `stored - hot` slow schedules: hourly
    `H * * * *` and daily `H H * * *` crons (H spreads them over the hour and
    the day by name) and intervals of 1-24 h anchored on whole minutes. They
    fall due on whole minutes, about `crowd` of them a minute, as the crowd
    does; so both runs have the same due fires per second, and the big run
    differs only in what is stored. The crowd is spelled `* * * H/1 *`
    (every minute: H/1 over the months is every month) so its fires take the
    per-name H path the big run's crons take: croniter expands H for each
    name (141 us a compile, against 92 for `H * * * *` and 137 for
    `H H * * *`; `H/1 * * * *`, 425 us, made the reference the dearer run).
    """

    stored: int
    small: int
    hot_low: int = 10  # hot interval periods, seconds
    hot_high: int = 60
    hourly_share: float = 0.33  # of the slow schedules
    daily_share: float = 0.62  # ...the rest are 1-24 h intervals

    def slow_counts(self) -> tuple[int, int, int]:
        """(hourly, daily, intervals) among the big run's slow schedules."""
        slow = self.stored - self.hot
        hourly = round(slow * self.hourly_share)
        daily = round(slow * self.daily_share)
        return hourly, daily, slow - hourly - daily

    @property
    def crowd(self) -> int:
        """Slow schedules due per minute, on average: the reference run's every-minute crons."""
        # Per slow schedule and minute: r. The slow ones are stored - small + crowd,
        # so crowd = r * (stored - small + crowd), solved for crowd.
        r = (
            self.hourly_share / 60
            + self.daily_share / 1440
            + (1 - self.hourly_share - self.daily_share) * 60 * _SLOW_MEAN_RATE
        )
        return min(self.small - 1, round(r * (self.stored - self.small) / (1 - r)))

    @property
    def hot(self) -> int:
        return self.small - self.crowd

    def hot_intervals(self) -> list[Interval]:
        return steady(self.hot, self.hot_low, self.hot_high)

    def hot_tables(self) -> Iterator[tuple[str, dict[str, str]]]:
        return _interval_tables(self.hot_intervals())

    def reference_tables(self) -> Iterator[tuple[str, dict[str, str]]]:
        """The reference run's schedules as (name, codec table without task and queue)."""
        for i in range(self.crowd):
            yield f"m{i:07d}", {"cron": "* * * H/1 *"}
        yield from self.hot_tables()

    def slow_tables(self) -> Iterator[tuple[str, dict[str, str]]]:
        """The big run's schedules besides the hot ones."""
        hourly, daily, intervals = self.slow_counts()
        for i in range(hourly):
            yield f"h{i:07d}", {"cron": "H * * * *"}
        for i in range(daily):
            yield f"d{i:07d}", {"cron": "H H * * *"}
        for i in range(intervals):
            hours = 1 + i % 24
            minute = (i * 7919) % (hours * 60)
            yield f"i{i:07d}", {"every": f"{hours}h", "anchor": iso(minute * 60)}


_SLOW_MEAN_RATE = sum(1 / (3600 * h) for h in range(1, 25)) / 24
"""Fires per second of one slow interval, averaged over the 1-24 h periods."""


def _interval_tables(intervals: list[Interval]) -> Iterator[tuple[str, dict[str, str]]]:
    for i in intervals:
        yield i.name, {"every": f"{i.period}s", "anchor": iso(i.offset)}
