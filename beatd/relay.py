"""The outbox relay: recorded fires -> publisher -> marked sent after the confirm.

Only the leader relays, so messages leave from one place in publish_at
order. The tick records fires seconds ahead (tick.LOOKAHEAD) and hands the relay
what it wrote (`offer`); the relay holds them until their instant, so
publishing costs no database round trip. The outbox stays the truth: a new term
(lease epoch) and a broker failure read it afresh, and a read of what is
already due every REREAD picks up fires recorded elsewhere (trigger,
backfill). A fire is marked sent only after the broker confirmed it, in
batches at most SETTLE_AFTER late (a crash in between sends those again:
at-least-once, same fire id). Returned (unroutable) and expired fires are
marked failed; nacked ones stay in the outbox. When the broker fails,
everything unconfirmed stays in the outbox and the relay backs off
(publish.retry.RetryPolicy); the same fire ids go out again later, in order.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from beatd.clock import Clock
from beatd.errors import BrokerError
from beatd.metrics import Metrics
from beatd.model import Message
from beatd.publish.base import Publisher, Result, Status
from beatd.publish.retry import RetryPolicy
from beatd.store.base import FireLog
from beatd.tick import LOOKAHEAD

log = logging.getLogger("beatd.relay")

BATCH = 5000  # fires per publish call: an instant shared by many schedules goes out at once
AHEAD = LOOKAHEAD + timedelta(milliseconds=100)  # a fresh read takes all recorded ahead
WINDOW = 50_000  # at most this many of them
REREAD = timedelta(milliseconds=250)  # read what is due at least this often
SETTLE_AFTER = timedelta(milliseconds=50)  # mark confirmed fires sent at most this late
RECENT = 10_000  # ids sent lately: an offer that lost a race to a read is not resent


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
        term: Callable[[], int | None] = lambda: 0,
    ) -> None:
        """`term` is the lease epoch while leading, else None."""
        self.firelog, self.publisher, self.clock = log_, publisher, clock
        self.metrics = metrics or Metrics()
        self.batch, self.term = batch, term
        self.retry = retry or RetryPolicy()
        self.failures = 0  # broker failures in a row
        self._retry_at: datetime | None = None
        self._term: int | None = None
        self._offers: deque[tuple[int, list[Message]]] = deque()  # from the tick's thread
        self._heap: list[tuple[datetime, str, Message]] = []  # held until publish_at
        self._held: set[str] = set()
        self._read_at: datetime | None = None  # None: read the whole window next
        self._recheck = False  # a change may have withdrawn fires held here
        self._more = False  # the last read filled a batch: read again before sleeping
        self._recent: dict[str, None] = {}  # at least the last RECENT ids sent, oldest first
        self._confirmed: list[str] = []  # confirmed, not marked sent yet
        self._confirmed_at: datetime | None = None  # the oldest of those confirms

    def offer(self, epoch: int, messages: list[Message]) -> None:
        """Fires the tick just recorded under `epoch`; safe from another thread."""
        self._offers.append((epoch, messages))

    def recheck(self) -> None:
        """Schedules changed: drop held fires the change withdrew; safe from another thread."""
        self._recheck = True

    def run_once(self, now: datetime) -> datetime | None:
        """Publish everything due at `now`; returns when to run next (None: outbox empty).

        Raises StoreError when the database fails; BrokerError is handled
        here (backoff), with every unconfirmed fire left in the outbox.
        """
        if self._retry_at is not None and now < self._retry_at:
            return self._retry_at
        if not self._catch_up_with_the_term():
            self.settle()
            return None
        while True:
            self._take_offers()  # before any read: an offered fire is never read (and sent) twice
            if self._read_at is None or self._more:
                self._read(now)  # after a reset the outbox goes first: fires leave in order
            due = self._pop_due(now)  # else what is held goes first: no database on its path
            if not due and now - (self._read_at or now) >= REREAD:
                self._read(now)
                due = self._pop_due(now)
            if not due:
                break
            try:
                results = self.publisher.publish(due, now)
            except BrokerError as exc:
                return self._back_off(now, str(exc))
            if not self._account(due, results):
                return self._back_off(now, "the broker nacked messages")
            self._recovered()
            if len(self._confirmed) >= 2 * self.batch:
                self.settle()  # a long catch-up marks as it goes, not between every batch
            if len(due) < self.batch and not self._more:
                break
        return self._next(now)

    def _catch_up_with_the_term(self) -> bool:
        """Apply term changes, offers and withdrawals; False when not leading."""
        term = self.term()
        if term != self._term:
            self._term = term
            self._forget()
        self._take_offers()
        if term is not None and self._recheck:
            self._recheck = False
            self._drop_withdrawn()
        return term is not None

    def _pop_due(self, now: datetime) -> list[Message]:
        due: list[Message] = []
        while self._heap and self._heap[0][0] <= now and len(due) < self.batch:
            due.append(heapq.heappop(self._heap)[2])
        self._held.difference_update(m.fire_id for m in due)
        return due

    def settle(self) -> None:
        """Mark the confirmed fires sent (they leave the outbox)."""
        if self._confirmed:
            sent, self._confirmed = self._confirmed, []
            self.firelog.mark_sent(sent, self._confirmed_at or self.clock.now())
            self._confirmed_at = None

    def _take_offers(self) -> None:
        while self._offers:
            epoch, messages = self._offers.popleft()
            if epoch == self._term:  # an older term's fires are read from the outbox
                self._hold(messages)
                self.publisher.prepare(messages)  # encoded now, written at their instant

    def _hold(self, messages: Iterable[Message]) -> int:
        """Hold messages not held yet; returns how many were new."""
        new = 0
        for m in messages:
            if m.fire_id not in self._held and m.fire_id not in self._recent:
                self._held.add(m.fire_id)
                heapq.heappush(self._heap, (m.publish_at, m.fire_id, m))
                new += 1
        return new

    def _read(self, now: datetime) -> None:
        """The whole window after a reset, else only what is due (fires recorded elsewhere)."""
        self.settle()  # settled fires are out of the outbox: the read sees only unsent ones
        whole = self._read_at is None
        limit = WINDOW if whole else self.batch
        read = self.firelog.pending(now + AHEAD if whole else now, limit)
        self._more = self._hold(read) > 0 and len(read) == limit
        self._read_at = now

    def _drop_withdrawn(self) -> None:
        if not self._held:
            return
        kept = self.firelog.still_pending(list(self._held))
        if len(kept) < len(self._held):
            self._heap = [entry for entry in self._heap if entry[1] in kept]
            heapq.heapify(self._heap)
            self._held = kept

    def _account(self, due: list[Message], results: list[Result]) -> bool:
        """Book the broker's answers; False when it nacked some (they stay in the outbox)."""
        confirmed_at = self.clock.now()
        by_id = {m.fire_id: m for m in due}
        nacked = False
        for r in results:
            if r.status is Status.CONFIRMED:
                self._recent[r.fire_id] = None
                self._confirmed.append(r.fire_id)
                lag = (confirmed_at - by_id[r.fire_id].scheduled_for).total_seconds()
                self.metrics.lag.observe(max(lag, 0.0))
            elif r.status is Status.NACKED:
                nacked = True
            else:
                self.firelog.mark_failed(r.fire_id, r.reason or str(r.status), confirmed_at)
                self.metrics.failed.inc()
                log.warning(
                    "fire not delivered",
                    extra={"fire_id": r.fire_id, "status": str(r.status), "reason": r.reason},
                )
        if len(self._recent) > 2 * RECENT:
            self._recent = dict.fromkeys(list(self._recent)[-RECENT:])
        self.metrics.sent.inc(sum(r.status is Status.CONFIRMED for r in results))
        if self._confirmed_at is None and self._confirmed:
            self._confirmed_at = confirmed_at
        return not nacked

    def _next(self, now: datetime) -> datetime | None:
        """Settle when nothing is due within SETTLE_AFTER (or the oldest confirm is that old)."""
        upcoming = self._heap[0][0] if self._heap else None
        if self._confirmed_at is not None:
            settle_by = self._confirmed_at + SETTLE_AFTER
            if upcoming is None or upcoming > settle_by or now >= settle_by:
                self.settle()
            else:
                return min(upcoming, settle_by)
        return upcoming if upcoming is not None else self.firelog.next_publish_at()

    def _forget(self) -> None:
        """Drop what is held: the outbox still has all of it, and is read afresh."""
        self._heap.clear()
        self._held.clear()
        self._read_at = None

    def _back_off(self, now: datetime, why: str) -> datetime:
        self._forget()
        self.settle()
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
