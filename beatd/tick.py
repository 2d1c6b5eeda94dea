"""The leader's tick: due schedules -> planner -> one fenced transaction per batch.

Nothing here decides policy (planner.py does) or talks to a database or a
broker directly: the tick reads due schedules, plans each, and records the
decisions, their outbox messages and the advanced run state in ONE
transaction per batch, fenced by the lease epoch. A schedule is therefore
never advanced before its fires are durable, and a stale leader writes
nothing (Fenced -> step down).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from beatd.errors import Fenced
from beatd.leader import Leadership
from beatd.metrics import Metrics
from beatd.model import WHOLE, Advance, Decision, Message, Outcome, Partition
from beatd.planner import Builder, plan
from beatd.store.base import FireLog, ScheduleStore

log = logging.getLogger("beatd.tick")

BATCH = 500  # schedules per transaction
FIRST_BATCH = 50  # ...in a term's first one (startup, failover: overdue fires wait for it)
FIRES_PER_COMMIT = 2000  # ...and about this many fires: a catch-up commits (and sends) as it goes
MAX_ROUNDS = 40  # batches per tick before yielding to the loop (lease, signals)
LOOKAHEAD = timedelta(seconds=2)  # record fires this far ahead (a change withdraws them)
RECORD_COST = timedelta(microseconds=300)  # a fire's due read, plan and write, on a slow machine
CROWD_CAP = 30_000  # fires one head start is sized for (100 x RECORD_COST = 9 s)


class TickStore(ScheduleStore, FireLog, Protocol):
    pass


class Ticker:
    def __init__(
        self,
        store: TickStore,
        leader: Leadership,
        build: Builder,
        metrics: Metrics | None = None,
        *,
        batch: int = BATCH,
        fires_per_commit: int = FIRES_PER_COMMIT,
        on_recorded: Callable[[list[Message]], None] = lambda messages: None,
        lookahead: timedelta = LOOKAHEAD,
        record_cost: timedelta = RECORD_COST,
        partition: Partition = WHOLE,
    ) -> None:
        self.store, self.leader, self.build = store, leader, build
        self.partition = partition  # decides only these schedules, under their lease
        self.metrics = metrics or Metrics()
        self.batch, self.lookahead, self.fires_per_commit = batch, lookahead, fires_per_commit
        self.record_cost = record_cost
        self.on_recorded = on_recorded  # offers the relay what was written (its cache)
        self._term: tuple[int, datetime] | None = None  # (epoch, when it began deciding)
        self._crowded: tuple[datetime, datetime] | None = None  # (wake at, record through)

    def tick(self, now: datetime) -> datetime | None:
        """Record everything due by `now` + lookahead (or a crowded instant it woke early for).

        Returns when to tick next (None: idle).

        Recording ahead takes the database write off the critical path: the
        relay publishes each fire at its instant. Ticks are spaced at least
        lookahead/2 apart, so a busy leader batches many fires per
        transaction. Returns None at once when not leading. Raises
        StoreError when the database fails (nothing of the failed batch is
        written).
        """
        horizon = self._horizon(now)
        for _ in range(MAX_ROUNDS):
            lease = self.leader.lease
            if lease is None:
                return None
            limit = self.batch
            if self._term is None or self._term[0] != lease.epoch:
                self._term = (lease.epoch, now)  # instants due before this were missed
                limit = FIRST_BATCH  # a new leader's first fires leave after a short transaction
            due = self.store.due(horizon, limit, self.partition)
            decisions: list[Decision] = []
            advances: list[Advance] = []
            taken = 0
            for stored in due:
                taken += 1
                planned = plan(stored, now, self.build, since=self._term[1], horizon=horizon)
                decisions.extend(planned.decisions)
                if planned.advance is not None:
                    advances.append(planned.advance)
                if len(decisions) >= self.fires_per_commit:
                    break  # the rest stay due for the next round
            if not advances:
                break
            try:
                written = set(self.store.record(lease, decisions, advances))
            except Fenced:
                self.leader.step_down()
                return None
            self._count(decisions)
            messages = [
                d.message for d in decisions if d.message is not None and d.fire_id in written
            ]
            if messages:
                self.on_recorded(messages)
            if taken == len(due) < limit:
                break
        else:
            return now  # more is due: go on after the loop's other duties
        return self._next_wake(now)

    def _next_wake(self, now: datetime) -> datetime | None:
        """Ticks are spaced lookahead/2 apart, but for a crowd: a crowd seen late (an
        every-second schedule beside it hides it until it is next) is recorded from now."""
        next_due = self.store.next_due_at(self.partition)
        if next_due is None:
            return None
        wake = next_due - self._head_start(next_due)
        return max(wake, now if self._crowded is not None else now + self.lookahead / 2)

    def _horizon(self, now: datetime) -> datetime:
        """now + lookahead; once it is time for a crowd's head start, through the crowd."""
        horizon = now + self.lookahead
        if self._crowded is not None and now >= self._crowded[0]:
            return max(horizon, self._crowded[1])
        return horizon

    def _head_start(self, instant: datetime) -> timedelta:
        """How long before `instant` to wake: 3/4 of the lookahead, more for a crowd.

        Not a whole lookahead: instants cluster on whole seconds, and a tick
        exactly lookahead before one would run just as the relay publishes the
        instants recorded last time. A crowd (10,000 `* * * * *` schedules)
        takes longer to record than that: wake early enough to record all of
        it before it is due, so at the instant only publishing is left.
        """
        head = self.lookahead * 3 / 4
        until = instant + self.lookahead / 4
        crowd = self.store.due_count(until, CROWD_CAP, self.partition)
        if crowd <= self.batch or self.record_cost * crowd <= head:
            self._crowded = None
            return head
        self._crowded = (instant - self.record_cost * crowd, until)
        return self.record_cost * crowd

    def _count(self, decisions: list[Decision]) -> None:
        sends = sum(d.outcome is Outcome.PENDING for d in decisions)
        self.metrics.recorded.inc(sends)
        self.metrics.dropped.inc(len(decisions) - sends)
        if len(decisions) > sends:
            names = sorted({d.schedule for d in decisions if d.outcome is Outcome.DROPPED})
            log.info(
                "missed instants dropped",
                extra={"dropped": len(decisions) - sends, "schedules": names[:20]},
            )
