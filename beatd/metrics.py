"""Prometheus metrics on a registry of their own (never the global default).

What a partition's ticker and relay do is counted under a `partition` label,
its index: "0" to "P-1", the single value "0" with P = 1, the same values as
`beatd_partition_held`. So a scrape shows which partitions an instance works
on, and a sum by partition across instances each partition's whole work,
whoever held it when. P is bounded by the config, and so are the series.
What belongs to the process (the lease loop, the pruner, the leading gauge)
has no label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BY_PARTITION = ("partition",)


class _Families:
    """Every metric of one registry; those of a partition's work take the `partition` label."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.recorded = Counter(
            "beatd_fires_recorded",
            "Fires recorded in the outbox by this instance",
            BY_PARTITION,
            registry=r,
        )
        self.sent = Counter(
            "beatd_fires_sent", "Fires confirmed by the broker", BY_PARTITION, registry=r
        )
        self.dropped = Counter(
            "beatd_fires_dropped",
            "Instants decided but not sent (misfire policy)",
            BY_PARTITION,
            registry=r,
        )
        self.failed = Counter(
            "beatd_fires_failed",
            "Fires returned by the broker or expired unsent",
            BY_PARTITION,
            registry=r,
        )
        self.lag = Histogram(
            "beatd_fire_lag_seconds",
            "Scheduled instant to broker confirm",
            BY_PARTITION,
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.backlog = Gauge(
            "beatd_backlog",
            "Recorded fires not yet confirmed, in a partition this instance holds (else 0)",
            BY_PARTITION,
            registry=r,
        )
        self.broker_errors = Counter(
            "beatd_broker_errors",
            "Publish batches that failed on the broker",
            BY_PARTITION,
            registry=r,
        )
        self.is_leader = Gauge(
            "beatd_is_leader", "1 while this instance leads (any partition)", registry=r
        )
        self.holds = Gauge(
            "beatd_partition_held",
            "1 while this instance holds the partition's lease (partitions > 1)",
            BY_PARTITION,
            registry=r,
        )
        self.renew_failures = Counter(
            "beatd_lease_renew_failures", "Failed lease renewals or acquisitions", registry=r
        )
        self.pruned = Counter(
            "beatd_history_pruned", "History rows deleted by retention (keep_history)", registry=r
        )


class Metrics:
    """Everything the daemon counts, with the per-partition metrics bound to one partition.

    `Metrics()` is a daemon's (its per-partition metrics are partition 0's,
    all there is with P = 1); `metrics.of(index)` is the view a partition's
    ticker and relay count in: the same registry, bound to that partition.
    """

    def __init__(self, partition: int = 0, families: _Families | None = None) -> None:
        f = self._families = families or _Families()
        self.registry = f.registry
        self.partition = partition
        label = str(partition)
        self.recorded = f.recorded.labels(label)
        self.sent = f.sent.labels(label)
        self.dropped = f.dropped.labels(label)
        self.failed = f.failed.labels(label)
        self.lag = f.lag.labels(label)
        self.backlog = f.backlog.labels(label)
        self.broker_errors = f.broker_errors.labels(label)
        self.is_leader, self.holds = f.is_leader, f.holds
        self.renew_failures, self.pruned = f.renew_failures, f.pruned

    def of(self, partition: int) -> Metrics:
        """The same metrics, the per-partition ones counted under `partition`."""
        return self if partition == self.partition else Metrics(partition, self._families)

    def render(self) -> bytes:
        return generate_latest(self.registry)
