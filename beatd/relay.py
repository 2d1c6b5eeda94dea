"""The outbox relay: recorded fires -> publisher -> marked sent after the confirm.

Only the leader relays, so messages leave from one place in publish_at
order. A fire is marked sent only after the broker confirmed it; returned
(unroutable) and expired ones are marked failed; nacked ones stay in the
outbox. When the broker fails the whole batch stays in the outbox and the
relay backs off (publish.retry.RetryPolicy); the same fire ids go out again later, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from beatd.clock import Clock
from beatd.errors import BrokerError
from beatd.metrics import Metrics
from beatd.publish.base import Publisher, Status
from beatd.publish.retry import RetryPolicy
from beatd.store.base import FireLog

log = logging.getLogger("beatd.relay")

BATCH = 500


class Relay:
    def __init__(
        self,
        log_: FireLog,
        publisher: Publisher,
        clock: Clock,
        metrics: Metrics | None = None,
        *,
        batch: int = BATCH,
        retry: RetryPolicy | None = None,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.firelog, self.publisher, self.clock = log_, publisher, clock
        self.metrics = metrics or Metrics()
        self.batch, self.leading = batch, leading
        self.retry = retry or RetryPolicy()
        self.failures = 0  # broker failures in a row
        self._retry_at: datetime | None = None

    def run_once(self, now: datetime) -> datetime | None:
        """Publish everything due at `now`; returns when to run next (None: outbox empty).

        Raises StoreError when the database fails; BrokerError is handled
        here (backoff), with every unconfirmed fire left in the outbox.
        """
        if self._retry_at is not None and now < self._retry_at:
            return self._retry_at
        while self.leading():
            messages = self.firelog.pending(now, self.batch)
            if not messages:
                break
            try:
                results = self.publisher.publish(messages, now)
            except BrokerError as exc:
                return self._back_off(now, str(exc))
            confirmed_at = self.clock.now()
            by_id = {m.fire_id: m for m in messages}
            sent = [r.fire_id for r in results if r.status is Status.CONFIRMED]
            if sent:
                self.firelog.mark_sent(sent, confirmed_at)
                self.metrics.sent.inc(len(sent))
                for fid in sent:
                    lag = (confirmed_at - by_id[fid].scheduled_for).total_seconds()
                    self.metrics.lag.observe(max(lag, 0.0))
            for r in results:
                if r.status in (Status.RETURNED, Status.EXPIRED):
                    self.firelog.mark_failed(r.fire_id, r.reason or str(r.status), confirmed_at)
                    self.metrics.failed.inc()
                    log.warning(
                        "fire not delivered",
                        extra={"fire_id": r.fire_id, "status": str(r.status), "reason": r.reason},
                    )
            if any(r.status is Status.NACKED for r in results):
                return self._back_off(now, "the broker nacked messages")
            self._recovered()
            if len(messages) < self.batch:
                break
        return self.firelog.next_publish_at()

    def _back_off(self, now: datetime, why: str) -> datetime:
        self.failures += 1
        self.metrics.broker_errors.inc()
        delay = self.retry.delay(self.failures)
        if self.failures == 1:
            log.error(f"broker: {why}; keeping the outbox, retrying with backoff")
        self._retry_at = now + timedelta(seconds=delay)
        return self._retry_at

    def _recovered(self) -> None:
        if self.failures:
            log.info("broker reachable again", extra={"after_failures": self.failures})
        self.failures, self._retry_at = 0, None
