"""What a store must do, as three small Protocols, plus the values they trade.

A store is the source of truth: schedules, their run state (next instant,
fire count), the run history, the outbox of unsent messages and the leader
lease. The SQL store (PostgreSQL, SQLite) and the memory store pass the same
contract tests. Every method raises only BeatdError subclasses (StoreError
when the database fails, Fenced when a lease check fails).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from beatd.model import (
    WHOLE,
    Advance,
    Decision,
    FireRecord,
    Instance,
    Lease,
    Message,
    Partition,
    Schedule,
    ScheduleFilter,
    SchedulePage,
    StoredSchedule,
)

NextAt = Callable[[Schedule], "datetime | None"]
"""Computes a schedule's first instant to decide (strictly after "now")."""


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def first_version(now: datetime) -> int:
    """A new schedule's version: the database time in microseconds, not 1.

    A name removed and added again must not reuse a version its earlier self
    had, or a tick that read the old one just before the removal would pass
    the version check and record its fires as the new one's (ABA).
    """
    return int(now.timestamp() * 1_000_000)


class ScheduleStore(Protocol):
    """Schedules and their run state.

    Every change (load_file, put, delete, pausing) also withdraws the
    schedule's fires recorded ahead whose instant is still to come and that
    the relay has not claimed (manual fires excepted): their fire and outbox
    rows go, and a schedule whose timing did not change is decided again from
    the earliest of them, so the change applies to every fire not going out
    yet. A claimed fire goes out as recorded, and history says so.
    """

    def load_file(self, schedules: Sequence[Schedule], next_at: NextAt) -> ReconcileResult:
        """Make the file-owned schedules exactly `schedules`.

        Upserts each as source "file", deletes file schedules not listed
        (their history stays), never touches "api" schedules, keeps pauses.
        A new schedule, or one whose timing changed, gets next_at(schedule);
        an unchanged one keeps its run state, so missed fires survive a
        restart. Idempotent, and safe when several instances load at once.
        Raises Conflict if a listed name is owned by the API.
        """
        ...

    def put(self, schedule: Schedule, next_at: datetime | None, *, replace: bool) -> None:
        """Add an API schedule (or replace it when `replace`).

        Raises Conflict if the name exists and not `replace`, or if the file
        owns it. Bumps the change counter.
        """
        ...

    def delete(self, name: str) -> None:
        """Delete an API schedule, keeping its history. NotFound, Conflict (file-owned)."""
        ...

    def set_paused(
        self, name: str, paused: bool, note: str | None, next_at: datetime | None
    ) -> None:
        """Pause or resume any schedule; on resume next_at restarts the schedule."""
        ...

    def get(self, name: str) -> StoredSchedule:
        """One schedule; raises NotFound."""
        ...

    def all(self) -> list[StoredSchedule]:
        """Every schedule, ordered by name."""
        ...

    def due(self, now: datetime, limit: int, partition: Partition = WHOLE) -> list[StoredSchedule]:
        """Unpaused schedules of `partition` with next_at <= now, earliest first.

        Touches only due rows (an index on next_at), so its cost does not
        grow with the number of schedules. The whole partition (P = 1) adds
        no filter at all.
        """
        ...

    def next_due_at(self, partition: Partition = WHOLE) -> datetime | None:
        """The earliest next_at of an unpaused schedule of `partition`."""
        ...

    def due_count(self, now: datetime, cap: int, partition: Partition = WHOLE) -> int:
        """How many schedules due(now, cap, partition) would return (no definitions read)."""
        ...

    def change_count(self) -> int:
        """A counter bumped by every change; cheap to poll."""
        ...

    def page(self, where: ScheduleFilter, offset: int, limit: int) -> SchedulePage:
        """The schedules matching `where` ordered by name, from `offset`, at most `limit`.

        Reads the definitions and history of that page only (the filter runs
        in the database), so a page costs little at 100,000 schedules.
        """
        ...


class FireLog(Protocol):
    def record(
        self, lease: Lease | None, decisions: Sequence[Decision], advances: Sequence[Advance]
    ) -> list[str]:
        """Record decisions, their outbox messages and advances in one transaction.

        Each outbox row carries its schedule's bucket (model.bucket). With a
        lease (the tick records only its partition's schedules), the
        transaction first checks (and locks) that the lease
        row still has this holder and epoch and has not expired by the
        database clock; otherwise it raises Fenced and writes nothing. A
        decision whose (schedule, scheduled_for) exists already is skipped;
        an advance whose version no longer matches is skipped together with
        its schedule's decisions. Returns the ids of the fires written.
        Without a lease (trigger, backfill) only the uniqueness rule guards,
        and a write moves the change counter: the leader, in whatever process,
        hears of it at once and claims the new fires.
        """
        ...

    def claim(
        self,
        lease: Lease,
        through: datetime,
        limit: int,
        known: Mapping[str, tuple[int, Message]] | None = None,
    ) -> list[Message]:
        """Take `lease.partition`'s outbox messages with publish_at <= through.

        Fenced like record (Fenced, nothing written, unless `lease` is
        current). Marks at most `limit` messages not claimed in this epoch
        (never claimed, or by an older epoch) as claimed by it and returns
        them, oldest publish_at first. From then on no change withdraws them.
        A row whose fire id maps in `known` to (its Message.stamp, a
        message) is returned as that message object, not read back: the
        caller's copy is exactly the row.
        """
        ...

    def next_publish_at(self, epoch: int, partition: Partition = WHOLE) -> datetime | None:
        """The earliest publish_at among `partition`'s outbox messages not claimed in `epoch`."""
        ...

    def mark_sent(self, fire_ids: Sequence[str], sent_at: datetime) -> None:
        """The broker confirmed these: outcome sent, outbox rows gone."""
        ...

    def mark_failed(self, fire_id: str, reason: str, at: datetime) -> None:
        """The broker returned this one (unroutable) or it expired unsent."""
        ...

    def history(self, schedule: str | None, limit: int) -> list[FireRecord]:
        """Past decisions, newest scheduled_for first."""
        ...

    def backlog(self) -> int:
        """How many recorded fires are not yet confirmed."""
        ...

    def backlogs(self, count: int) -> list[int]:
        """backlog() of each partition of `count`: element i is partition i's."""
        ...

    def lags(self, limit: int) -> list[float]:
        """Seconds from instant to confirm of the `limit` latest fires sent on schedule.

        Newest instant first; triggers, backfills and drops are left out.
        """
        ...

    def prune(self, before: datetime, limit: int) -> int:
        """Delete at most `limit` settled history rows, oldest first; returns how many went.

        A row goes when its scheduled_for is before `before`, or when it is
        beyond its schedule's `history_limit` (the newest that many stay).
        A pending fire (recorded, in the outbox) never goes. Nothing else
        reads these rows to decide: the planner works from the schedule's run
        state, so pruning changes no decision. One short transaction.
        """
        ...


class LeaseStore(Protocol):
    """The partitions' leases (compare-and-set, by the database clock) and the roll call.

    P = 1 has one lease (the leader's); P > 1 one per partition, each with
    its own holder, epoch and expiry.
    """

    def acquire(
        self, holder: str, ttl: timedelta, token: str, partition: Partition = WHOLE
    ) -> Lease | None:
        """Take `partition`'s lease if free, expired or still marked as `token`'s.

        The new epoch is greater than every lease's so far (of any
        partition). `token` is the calling process's nonce. None when another
        holds it, or while any lease of another partitioning (another P) is
        held.
        """
        ...

    def renew(self, lease: Lease, ttl: timedelta) -> Lease | None:
        """Extend our lease by compare-and-set on token and epoch; None if lost."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the lease up at once (expire it), only if it is still ours."""
        ...

    def current(self, partition: Partition = WHOLE) -> Lease | None:
        """`partition`'s lease if held and unexpired, by the database clock."""
        ...

    def leases(self) -> list[Lease]:
        """Every held, unexpired lease, of any partitioning, by partition."""
        ...

    def db_now(self) -> datetime:
        """The database's clock, aware UTC: the time authority for leases."""
        ...

    def heartbeat(self, holder: str, token: str, *, leaving: bool = False) -> None:
        """Note this process as seen now (database clock); `leaving` removes it."""
        ...

    def instances(self, since: datetime) -> list[Instance]:
        """The processes seen since `since`, oldest first."""
        ...


class Store(ScheduleStore, FireLog, LeaseStore, Protocol):
    """A whole backend."""

    def close(self) -> None:
        """Release connections."""
        ...
