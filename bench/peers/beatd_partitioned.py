"""Partitions (SPEC §10) measured beside one leader: issue 15's `partitioned` workloads.

`partitioned`: the `steady` workload run twice in one invocation, by one
leader (P = 1) and by several instances sharing P partitions (`measure.steady`
with `Beatd(instances, partitions)`: CPU summed over the instances), then
`compare` puts both against the lag floor of this run's batched-confirm
ceiling (raw pika) and the shared run's CPU per fire against the leader's.

`partitioned-failover`: every-1s schedules, one in each partition; once
the partitions are shared out, SIGKILL one instance and time, for each
partition it held, the first fire a survivor delivers; then start a new
instance and wait until it has taken its share again. Kills and lease timing
are `beatd_runner.failover`'s (`Fleet`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from beatd.ids import fire_id
from beatd.model import bucket
from bench.harness.consumer import Record
from bench.harness.measure import Settings, environment, lag_metrics, wait_for
from bench.harness.report import Result
from bench.harness.stats import median
from bench.harness.workloads import Interval, lag_floor
from bench.peers.beatd_runner import Fleet, holders, interval_table, upgrade


def compare(
    single: Result | None, shared: Result | None, ceiling: float | None, plan: list[Interval]
) -> None:
    """Adds the lag floor at `ceiling` msgs/s and p99 / floor to both; CPU per fire shared / single.

    The floor is `targets._floors`'s: fires sharing a whole-second instant
    leave one by one even at raw pika's batched-confirm rate.
    """
    runs = [r for r in (single, shared) if r is not None and not r.skipped]
    if ceiling:
        p50, p99 = (lag_floor(plan, ceiling, p) * 1000 for p in (50, 99))
        for r in runs:
            r.metrics.update({"ceiling_per_s": ceiling, "floor_p50_ms": p50, "floor_p99_ms": p99})
            if r.metrics.get("lag_p99_ms") is not None:
                r.metrics["p99_over_floor"] = ratio = r.metrics["lag_p99_ms"] / p99
                r.notes.append(f"p99 x{ratio:.2f} of the floor ({p99:.0f} ms at {ceiling:,.0f}/s)")
    if single in runs and shared in runs:
        assert single is not None and shared is not None
        for key, what in (("cpu_ms_per_fire", ""), ("cpu_ms_per_fire_all", "_all")):
            mine, theirs = shared.metrics.get(key), single.metrics.get(key)
            if mine and theirs:
                shared.metrics[f"cpu_per_fire_ratio{what}"] = mine / theirs
        if "cpu_per_fire_ratio" in shared.metrics:
            shared.notes.append(
                f"CPU per fire x{shared.metrics['cpu_per_fire_ratio']:.2f} of one leader"
                f" (x{shared.metrics.get('cpu_per_fire_ratio_all', float('nan')):.2f} with PG)"
            )


def spread(partitions: int) -> list[Interval]:
    """Every-1s schedules, one per partition (the first name each owns), by partition index."""
    first: dict[int, Interval] = {}
    i = 0
    while len(first) < partitions:
        name = f"pf{i:03d}"
        first.setdefault(bucket(name) % partitions, Interval(name, 1, 0))
        i += 1
    return [first[p] for p in range(partitions)]


class FirstOf:
    """done() for wait_for: the first arrival of a fire of each partition in `wanted`.

    A record's schedule is found by its message id (`fire_id` of a name and
    its scheduled instant: one UUIDv5 per schedule tried).
    """

    def __init__(self, beats: list[Interval], wanted: set[int], after: float) -> None:
        self.beats, self.wanted, self.after = beats, wanted, after
        self.first: dict[int, float] = {}

    def partition(self, r: Record) -> int | None:
        if r.scheduled is None or r.scheduled <= self.after:
            return None
        at = datetime.fromtimestamp(r.scheduled, UTC)
        for p in self.wanted - self.first.keys():
            if fire_id(self.beats[p].name, at) == r.message_id:
                return p
        return None

    def __call__(self, fresh: list[Record]) -> bool:
        for r in fresh:
            p = self.partition(r)
            if p is not None:
                self.first[p] = r.arrival
        return self.first.keys() >= self.wanted


def _until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} within {timeout:.0f}s")
        time.sleep(0.25)


def _shared(fleet: Fleet, partitions: int) -> bool:
    """Every partition held by a running instance, none over its share ceil(P / running)."""
    now = [h for p, h in holders(fleet.db_url).items() if p.count == partitions]
    fair = -(-partitions // len(fleet.running))
    return (
        len(now) == partitions
        and set(now) <= fleet.running.keys()
        and all(now.count(i) <= fair for i in fleet.running)
    )


def failover(
    rounds: int, lease: int, instances: int, partitions: int, settings: Settings
) -> Result:
    """Per round: SIGKILL the oldest instance; kill to a survivor's first fire, per partition."""
    result = Result("beatd", f"partitioned-failover-{instances}x{partitions}-lease{lease}s")
    beats = spread(partitions)
    took: list[list[float]] = []  # per round, per partition moved
    with environment(settings) as (db_url, queue, _probe, scratch, consumer):
        upgrade(db_url)
        tables = [interval_table(i, queue) for i in beats]
        config = {"lease": f"{lease}s", "partitions": partitions}
        with Fleet(db_url, scratch, settings, tables, **config) as fleet:
            for _ in range(instances):
                fleet.launch()
            for k in range(1, rounds + 1):
                _until(lambda: _shared(fleet, partitions), 4 * lease + 30, "shared out")
                victim = next(iter(fleet.running))
                lost = {p.index for p, h in holders(db_url).items() if h == victim}
                if not lost:
                    raise RuntimeError(f"{victim} held no partition: more instances than P?")
                killed_at = fleet.kill(victim)
                firsts = FirstOf(beats, lost, killed_at)
                if not wait_for(consumer, firsts, lease + 30):
                    raise RuntimeError(f"partitions {sorted(lost - firsts.first.keys())} silent")
                took.append([firsts.first[p] - killed_at for p in sorted(lost)])
                settings.log(
                    f"  beatd: {len(lost)} partitions moved in {min(took[-1]):.2f}"
                    f"-{max(took[-1]):.2f}s (round {k}/{rounds})"
                )
                fleet.launch()
    every = [t for each in took for t in each]
    dupes = lag_metrics([r for r in consumer.records if r.queue == queue])["duplicates"]
    result.metrics.update(
        {
            "seconds": median(every),
            "max_s": max(every),
            "min_s": min(every),
            "rounds": len(took),
            "moved": len(every),
            "lease_s": lease,
            "instances": instances,
            "partitions": partitions,
            "round_max_s": [round(max(each), 3) for each in took],
            "all_s": [[round(t, 3) for t in each] for each in took],
            "duplicates": dupes,
        }
    )
    result.notes.append(
        f"{len(every)} partitions moved in {len(took)} kills: median {median(every):.2f}s,"
        f" max {max(every):.2f}s; lease {lease}s; {dupes} duplicate ids"
    )
    return result
