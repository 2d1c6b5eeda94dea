"""Prometheus metrics on a registry of their own (never the global default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Everything the daemon counts; one instance per Daemon."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.recorded = Counter(
            "beatd_fires_recorded", "Fires recorded in the outbox by this instance", registry=r
        )
        self.sent = Counter("beatd_fires_sent", "Fires confirmed by the broker", registry=r)
        self.dropped = Counter(
            "beatd_fires_dropped", "Instants decided but not sent (misfire policy)", registry=r
        )
        self.failed = Counter(
            "beatd_fires_failed", "Fires returned by the broker or expired unsent", registry=r
        )
        self.lag = Histogram(
            "beatd_fire_lag_seconds",
            "Scheduled instant to broker confirm",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.backlog = Gauge("beatd_backlog", "Recorded fires not yet confirmed", registry=r)
        self.is_leader = Gauge(
            "beatd_is_leader", "1 while this instance leads (any partition)", registry=r
        )
        self.holds = Gauge(
            "beatd_partition_held",
            "1 while this instance holds the partition's lease (partitions > 1)",
            ["partition"],
            registry=r,
        )
        self.renew_failures = Counter(
            "beatd_lease_renew_failures", "Failed lease renewals or acquisitions", registry=r
        )
        self.pruned = Counter(
            "beatd_history_pruned", "History rows deleted by retention (keep_history)", registry=r
        )
        self.broker_errors = Counter(
            "beatd_broker_errors", "Publish batches that failed on the broker", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
