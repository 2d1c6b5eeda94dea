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

from beatd.model import FireRecord, Lease, Outcome, Schedule
from beatd.publish.base import Message

NextAt = Callable[[Schedule], "datetime | None"]
"""Computes a schedule's first instant to decide (strictly after "now")."""


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A schedule with the run state the store keeps for it."""

    schedule: Schedule
    next_at: datetime | None  # the next instant not yet decided; None = finished
    last_at: datetime | None  # the latest instant decided (sent or dropped)
    fires: int  # instants recorded as fires so far (for max_fires)
    paused: bool
    note: str | None
    version: int  # bumped on every change of definition or pause
    created_at: datetime

    @property
    def state(self) -> str:
        """One of STATES: paused, else disabled, else finished (no next instant), else active."""
        if self.paused:
            return "paused"
        if not self.schedule.enabled:
            return "disabled"
        return "active" if self.next_at is not None else "finished"


STATES = ("active", "paused", "disabled", "finished")


@dataclass(frozen=True, slots=True)
class ScheduleFilter:
    """Which schedules a page lists; each field that is set narrows it."""

    text: str = ""  # a part of the name; ASCII letters match in either case
    state: str | None = None  # one of STATES
    source: str | None = None  # "file" or "api"

    def matches(self, name: str, state: str, source: str) -> bool:
        return (
            self.text.lower() in name.lower()
            and self.state in (None, state)
            and self.source in (None, source)
        )


@dataclass(frozen=True, slots=True)
class SchedulePage:
    """One page of schedules by name, how many match in all, and their newest history rows."""

    schedules: tuple[StoredSchedule, ...]
    total: int
    last: Mapping[str, FireRecord]  # name -> newest row, for those with any history


@dataclass(frozen=True, slots=True)
class Decision:
    """What the planner decided for one instant of one schedule."""

    schedule: str
    scheduled_for: datetime
    fire_id: str
    outcome: Outcome  # PENDING (to send; `message` is set) or DROPPED
    reason: str | None = None
    message: Message | None = None
    manual: bool = False


@dataclass(frozen=True, slots=True)
class Advance:
    """Move a schedule's run state forward, if its version is still `version`."""

    name: str
    version: int
    next_at: datetime | None
    last_at: datetime | None
    fires_added: int


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


class ScheduleStore(Protocol):
    """Schedules and their run state.

    Every change (load_file, put, delete, pausing) also withdraws the
    schedule's fires recorded ahead whose instant is still to come: their
    fire and outbox rows go, and a schedule whose timing did not change is
    decided again from the earliest of them, so the change applies to every
    fire not due yet.
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

    def due(self, now: datetime, limit: int) -> list[StoredSchedule]:
        """Unpaused schedules with next_at <= now, earliest first.

        Touches only due rows (an index on next_at), so its cost does not
        grow with the number of schedules.
        """
        ...

    def next_due_at(self) -> datetime | None:
        """The earliest next_at of an unpaused schedule."""
        ...

    def due_count(self, now: datetime, cap: int) -> int:
        """How many schedules due(now, cap) would return (index only; no definitions read)."""
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

        With a lease, the transaction first checks (and locks) that the lease
        row still has this holder and epoch and has not expired by the
        database clock; otherwise it raises Fenced and writes nothing. A
        decision whose (schedule, scheduled_for) exists already is skipped;
        an advance whose version no longer matches is skipped together with
        its schedule's decisions. Returns the ids of the fires written.
        Without a lease (trigger, backfill) only the uniqueness rule guards.
        """
        ...

    def still_pending(self, fire_ids: Sequence[str]) -> set[str]:
        """The ids among `fire_ids` still in the outbox (a change may have withdrawn some)."""
        ...

    def pending(self, now: datetime, limit: int) -> list[Message]:
        """Outbox messages with publish_at <= now, oldest publish_at first."""
        ...

    def next_publish_at(self) -> datetime | None:
        """The earliest publish_at in the outbox."""
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

    def lags(self, limit: int) -> list[float]:
        """Seconds from instant to confirm of the `limit` latest fires sent on schedule.

        Newest instant first; triggers, backfills and drops are left out.
        """
        ...


class LeaseStore(Protocol):
    def acquire(self, holder: str, ttl: timedelta) -> Lease | None:
        """Take the lease if free or expired (epoch + 1), or renew it if ours."""
        ...

    def renew(self, lease: Lease, ttl: timedelta) -> Lease | None:
        """Extend our lease by compare-and-set on holder and epoch; None if lost."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the lease up at once (expire it), only if it is still ours."""
        ...

    def current(self) -> Lease | None:
        """The lease if held and unexpired, by the database clock."""
        ...

    def db_now(self) -> datetime:
        """The database's clock, aware UTC: the time authority for leases."""
        ...


class Store(ScheduleStore, FireLog, LeaseStore, Protocol):
    """A whole backend."""

    def close(self) -> None:
        """Release connections."""
        ...
