"""The outbox relay: claimed fires -> publisher -> marked sent after the confirm.

One path for every fire: the tick (or a trigger, a backfill) records it in
the outbox, and the relay takes it from there and nowhere else. It *claims*
what is due within `ahead` (a write fenced by the lease epoch, like the
tick's), and from that moment the fire is going out: a change (pause,
replace, remove) withdraws only unclaimed fires. So what the relay publishes
is exactly what the outbox held when it claimed it, and its history row says
sent; a change that returned before the claim (more than `ahead` before the
instant) always wins.

The tick also offers the relay the messages it just recorded, as a cache:
each is kept under its fire id with its Message.stamp, the claim returns
each row's stamp, and a row is taken from the cache only when the stamps
match, so the cached copy is the very object the durable row was written
from (a fire withdrawn and recorded again as a new definition misses and is
read from the outbox). The cache
saves reading rows back and lets the publisher marshal frames seconds ahead.

Claimed messages are held until their publish_at, published with confirms
and marked sent in batches at most SETTLE_AFTER late; confirmed ids are
kept until that write succeeds (a crash in between sends them again:
at-least-once, same fire id). Returned
(unroutable) and expired fires are marked failed. A nack is that fire's own
problem: it is retried with its own backoff and marked failed after
MAX_NACKS, while the rest go on. A broker failure backs off the relay (the
broker is shared) and publishes what it holds again afterwards, in order. A
new term forgets what is held: the outbox still has it, claimed by the old
epoch, and the new term claims it again; but what this process saw confirmed
and could not mark sent yet (the database restarted under it) is only marked,
not sent twice.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import deque
from datetime import datetime, timedelta

from beatd.clock import Clock
from beatd.errors import BrokerError, Fenced
from beatd.leader import Leadership
from beatd.logs import EACH
from beatd.metrics import Metrics
from beatd.model import WHOLE, Lease, Message, Partition
from beatd.publish.base import Publisher, Result, Status
from beatd.publish.retry import RetryPolicy
from beatd.store.base import FireLog

log = logging.getLogger("beatd.relay")

BATCH = 5000  # fires per publish call: a crowded instant goes out at once
CLAIM = 20_000  # fires per claim statement
# Claim this long before publish_at: under 1 s, so a change a second ahead wins; and
# whole-second instants are claimed at x.25, between the publishing at x.0 and the
# tick's recording at x.5 (tick.Ticker._head_start).
AHEAD = timedelta(milliseconds=750)
CLAIM_GAP = timedelta(milliseconds=250)  # claim at most this often when busy
IDLE_CHECK = timedelta(seconds=1)  # look anyway (a poke from the change watcher is sooner)
WINDOW = 50_000  # messages held at most
SETTLE_AFTER = timedelta(milliseconds=50)  # mark confirmed fires sent at most this late
NACK_RETRY = RetryPolicy(initial=0.5, max=30.0)  # one fire's backoff after a nack
MAX_NACKS = 40  # then it is marked failed: about 17 minutes of refusals
KNOWN = 60_000  # offered messages cached at most (withdrawn ones age out)


class Relay:
    def __init__(
        self,
        firelog: FireLog,
        publisher: Publisher,
        clock: Clock,
        metrics: Metrics | None = None,
        *,
        leader: Leadership,
        batch: int = BATCH,
        ahead: timedelta = AHEAD,
        retry: RetryPolicy | None = None,
        partition: Partition = WHOLE,
    ) -> None:
        self.firelog, self.publisher, self.clock = firelog, publisher, clock
        self.partition = partition  # claims only these fires, under their lease
        self.metrics = metrics or Metrics()
        self.leader, self.batch, self.ahead = leader, batch, ahead
        self.retry = retry or RetryPolicy()
        self.failures = 0  # broker failures in a row
        self.last_error: str | None = None  # why the last of them failed (health reports it)
        self._retry_at: datetime | None = None  # the broker's backoff
        self._epoch: int | None = None  # the term of what is held
        self._held: list[tuple[datetime, str, Message]] = []  # claimed; a heap by publish_at
        self._nacks: dict[str, int] = {}  # fire id -> nacks so far
        self._claim_at: datetime | None = None  # None: claim at the next run
        self._poked = threading.Event()  # fires were recorded elsewhere: claim at the next run
        self._offers: deque[list[Message]] = deque()  # from the tick's thread
        self._known: dict[str, tuple[int, Message]] = {}  # fire id -> (stamp, message)
        self._confirmed: dict[str, None] = {}  # confirmed, not marked sent yet (in order)
        self._confirmed_at: datetime | None = None  # the oldest of those confirms

    def poke(self) -> None:
        """Fires were recorded by a trigger or elsewhere; safe from any thread."""
        self._poked.set()

    def offer(self, messages: list[Message]) -> None:
        """The tick just recorded these: a cache for the claim; safe from any thread."""
        self._offers.append(messages)

    def _take_offers(self) -> None:
        """Cache the tick's messages, and claim when the first of them is `ahead` away."""
        while self._offers:
            messages = self._offers.popleft()
            for m in messages:
                self._known[m.fire_id] = (m.stamp, m)
            self.publisher.prepare(messages)  # encoded now, written at their instant
            if messages and self._claim_at is not None:
                soonest = min(m.publish_at for m in messages) - self.ahead
                self._claim_at = min(self._claim_at, soonest)
        if len(self._known) > KNOWN:  # oldest first: withdrawn, or claimed by another term
            for key in list(self._known)[: len(self._known) - KNOWN]:
                del self._known[key]

    def run_once(self, now: datetime) -> datetime | None:
        """Publish everything due at `now`; returns when to run next (None: not leading).

        Raises StoreError when the database fails (what is held, confirmed
        or not, is kept for the next run); BrokerError is handled here.
        """
        self._take_offers()  # also in a broker outage: the cache is bounded, the queue is not
        lease = self.leader.lease
        if lease is None or lease.epoch != self._epoch:
            self._forget(lease)
        if lease is None:
            self.settle()
            return None
        if self._retry_at is not None and now < self._retry_at:
            return self._retry_at
        published: list[tuple[Message, float]] = []
        try:
            return self._publish_due(lease, now, published)
        finally:
            _log_published(published)  # once a crowded instant is out, not between its batches

    def _publish_due(
        self, lease: Lease | None, now: datetime, published: list[tuple[Message, float]]
    ) -> datetime | None:
        while lease is not None:
            try:
                self._claim(lease, now)
            except Fenced:
                self.leader.step_down()
                self._forget(None)
                return None
            due = self._pop_due(now)
            if not due:
                break
            if not self._still(lease):
                return None
            try:
                results = self.publisher.publish(due, now)
            except BrokerError as exc:
                return self._back_off(now, due, str(exc))
            self._recovered()
            self._account(due, results, now, published)
            if len(self._confirmed) >= 2 * self.batch:
                self.settle()  # a long catch-up marks as it goes
            if len(due) < self.batch:
                break
            lease = self.leader.lease  # a long catch-up stops as soon as the term ends
        return self._next(now)

    def _still(self, lease: Lease) -> bool:
        """Still in `lease`'s term right before publishing (else forget what is held).

        The claim is fenced, but a process frozen after it (or a slow claim) may
        resume past its lease, when the next term has claimed and sent the same
        fires; its own self-fence, checked here, keeps it from sending them again.
        """
        current = self.leader.lease
        if current is not None and current.epoch == lease.epoch:
            return True
        self._forget(current)
        return False

    def settle(self) -> None:
        """Mark the confirmed fires sent; they stay confirmed here until that succeeds."""
        if self._confirmed:
            self.firelog.mark_sent(list(self._confirmed), self._confirmed_at or self.clock.now())
            self._confirmed, self._confirmed_at = {}, None

    def drained(self, now: datetime, within: timedelta) -> bool:
        """Nothing held or unsettled, and nothing recorded due within `within` (for SIGTERM)."""
        if self._held or self._confirmed:
            return False
        if self._epoch is None:
            return True  # not leading: nothing more can go out from here
        upcoming = self.firelog.next_publish_at(self._epoch, self.partition)
        return upcoming is None or upcoming > now + within

    def _claim(self, lease: Lease, now: datetime) -> None:
        """Claim what is due within `ahead`, when it is time to look (or a poke says so)."""
        if not self._poked.is_set() and self._claim_at is not None and now < self._claim_at:
            return
        self._poked.clear()  # before reading: a poke during the claim is not lost
        while len(self._held) < WINDOW:
            limit = min(CLAIM, WINDOW - len(self._held))
            claimed = self.firelog.claim(lease, now + self.ahead, limit, self._known)
            fresh = []
            for m in claimed:
                if m.fire_id in self._confirmed:
                    continue  # sent by this process in an earlier term, its mark failed
                heapq.heappush(self._held, (m.publish_at, m.fire_id, m))
                cached = self._known.pop(m.fire_id, None)
                if cached is None or cached[1] is not m:
                    fresh.append(m)  # read from the outbox: not prepared yet
            self.publisher.prepare(fresh)
            if len(claimed) < limit:
                break
        # Next when the soonest unclaimed fire is `ahead` away (offers may bring it forward).
        upcoming = self.firelog.next_publish_at(lease.epoch, self.partition)
        later = (
            now + IDLE_CHECK if upcoming is None else min(upcoming - self.ahead, now + IDLE_CHECK)
        )
        self._claim_at = max(later, now + CLAIM_GAP)

    def _pop_due(self, now: datetime) -> list[Message]:
        due: list[Message] = []
        while self._held and self._held[0][0] <= now and len(due) < self.batch:
            due.append(heapq.heappop(self._held)[2])
        return due

    def _account(
        self,
        due: list[Message],
        results: list[Result],
        now: datetime,
        published: list[tuple[Message, float]],
    ) -> None:
        """Book the broker's answers: confirmed, nacked (retry that fire), or failed."""
        confirmed_at = self.clock.now()
        by_id = {m.fire_id: m for m in due}
        for r in results:
            message = by_id[r.fire_id]
            if r.status is Status.CONFIRMED:
                self._nacks.pop(r.fire_id, None)
                self._confirmed[r.fire_id] = None
                lag = max((confirmed_at - message.scheduled_for).total_seconds(), 0.0)
                self.metrics.lag.observe(lag)
                published.append((message, lag))
            elif r.status is Status.NACKED and self._nacks.get(r.fire_id, 0) + 1 < MAX_NACKS:
                self._retry_nacked(message, now)
            else:
                reason = r.reason or str(r.status)
                if r.status is Status.NACKED:
                    reason = f"refused by the broker {MAX_NACKS} times: {reason}"
                self._fail(message, reason, confirmed_at)
        self.metrics.sent.inc(sum(r.status is Status.CONFIRMED for r in results))
        if self._confirmed_at is None and self._confirmed:
            self._confirmed_at = confirmed_at

    def _retry_nacked(self, message: Message, now: datetime) -> None:
        """Hold a nacked fire back by its own backoff: a full queue delays only its fires."""
        nacks = self._nacks[message.fire_id] = self._nacks.get(message.fire_id, 0) + 1
        again = now + timedelta(seconds=NACK_RETRY.delay(nacks))
        heapq.heappush(self._held, (again, message.fire_id, message))
        self.metrics.broker_errors.inc()
        if nacks == 1:
            log.warning(
                "broker refused a fire (nack); retrying it with backoff",
                extra={"schedule": message.schedule, "fire_id": message.fire_id},
            )

    def _fail(self, message: Message, reason: str, at: datetime) -> None:
        self._nacks.pop(message.fire_id, None)
        self.firelog.mark_failed(message.fire_id, reason, at)
        self.metrics.failed.inc()
        log.warning(
            "fire not delivered",
            extra={"schedule": message.schedule, "fire_id": message.fire_id, "reason": reason},
        )

    def _next(self, now: datetime) -> datetime | None:
        """Settle when nothing is due within SETTLE_AFTER (or the oldest confirm is that old)."""
        upcoming = self._held[0][0] if self._held else None
        if self._confirmed_at is not None:
            settle_by = self._confirmed_at + SETTLE_AFTER
            if upcoming is None or upcoming > settle_by or now >= settle_by:
                self.settle()  # else the next fire is due first, and the mark waits for it
        wakes = [t for t in (upcoming, self._claim_at) if t is not None]
        return min(wakes, default=None)

    def _forget(self, lease: Lease | None) -> None:
        """A new term (or none): drop what is held; the outbox has it, claimed by the old epoch.

        The cache stays: an entry is used only for a row with its very stamp.
        """
        self._held.clear()
        self._nacks.clear()
        self._epoch = lease.epoch if lease is not None else None
        self._claim_at = None

    def _back_off(self, now: datetime, due: list[Message], why: str) -> datetime:
        """The broker failed: hold everything (in order) and try again after a backoff."""
        for m in due:
            heapq.heappush(self._held, (m.publish_at, m.fire_id, m))
        self.failures += 1
        self.last_error = why
        self.metrics.broker_errors.inc()
        if self.failures == 1:
            log.error(f"broker: {why}; keeping the outbox, retrying with backoff")
        self._retry_at = now + timedelta(seconds=self.retry.delay(self.failures))
        return self._retry_at

    def _recovered(self) -> None:
        if self.failures:
            log.info("broker reachable again", extra={"after_failures": self.failures})
        self.failures, self._retry_at, self.last_error = 0, None, None


def _log_published(published: list[tuple[Message, float]]) -> None:
    """A line per fire, written by one record (logs.EACH): a record per fire cost more CPU
    than publishing it."""
    if published and log.isEnabledFor(logging.INFO):
        each = [
            {
                "schedule": message.schedule,
                "fire_id": message.fire_id,
                "scheduled_for": message.scheduled_for.isoformat(),
                "lag_ms": round(lag * 1000, 1),
            }
            for message, lag in published
        ]
        log.info("fire published", extra={EACH: each})
