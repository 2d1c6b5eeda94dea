"""The memory twin of the SQL store: same contract, one lock, an injected clock.

Its "database clock" is the Clock it is given (a FakeClock in tests), so
lease expiry can be tested by moving time. Nothing survives the process.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from beatd.clock import Clock, SystemClock
from beatd.errors import AlreadyExists, Conflict, Fenced, NotFound
from beatd.model import (
    EPOCH,
    WHOLE,
    Advance,
    Decision,
    FireRecord,
    Instance,
    Lease,
    Message,
    Outcome,
    Partition,
    Schedule,
    ScheduleFilter,
    SchedulePage,
    Source,
    StoredSchedule,
    bucket,
)
from beatd.store import check_unique
from beatd.store.base import NextAt, ReconcileResult, first_version


@dataclass(slots=True)
class _Row:
    schedule: Schedule
    next_at: datetime | None
    last_at: datetime | None = None
    fires: int = 0
    paused: bool = False
    note: str | None = None
    version: int = 1
    created_at: datetime = EPOCH

    def stored(self) -> StoredSchedule:
        return StoredSchedule(
            self.schedule,
            self.next_at,
            self.last_at,
            self.fires,
            self.paused,
            self.note,
            self.version,
            self.created_at,
        )


def _timing(schedule: Schedule) -> tuple[object, ...]:
    """The fields that decide instants: when they change, next_at is recomputed."""
    return (schedule.spec, schedule.timezone, schedule.start, schedule.end, schedule.enabled)


def _owned_by_file(name: str) -> Conflict:
    return Conflict(
        f"schedule {name!r} is defined in the config file; edit the file and reload instead"
    )


def _known(message: Message, known: Mapping[str, tuple[int, Message]]) -> Message:
    found = known.get(message.fire_id)
    return found[1] if found is not None and found[0] == message.stamp else message


class MemoryStore:
    """A Store in a dict; thread-safe."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._rows: dict[str, _Row] = {}
        self._fires: dict[str, FireRecord] = {}
        self._instants: set[tuple[str, datetime]] = set()
        self._outbox: dict[str, Message] = {}
        self._claimed: dict[str, int] = {}  # fire id -> the epoch that claimed it
        self._leases: dict[Partition, Lease] = {}  # by partition, of any partitioning
        self._instances: dict[str, Instance] = {}
        self._changes = 0
        self._last_version = 0
        self._closed = False

    def _new_version(self, now: datetime) -> int:
        """first_version, and past any version handed out before (a fake clock stands still)."""
        self._last_version = max(first_version(now), self._last_version + 1)
        return self._last_version

    def _bump(self) -> None:
        self._changes += 1
        self._changed.notify_all()

    # -- schedules -------------------------------------------------------------

    def load_file(self, schedules: Sequence[Schedule], next_at: NextAt) -> ReconcileResult:
        check_unique(schedules)
        with self._lock:
            listed = [dataclasses.replace(s, source=Source.FILE) for s in schedules]
            for schedule in listed:
                row = self._rows.get(schedule.name)
                if row is not None and row.schedule.source is not Source.FILE:
                    raise Conflict(
                        f"schedule {schedule.name!r} is in the config file but was added "
                        "through the API; remove one of them"
                    )
            now = self.clock.now()
            added, changed = [], []
            for schedule in listed:
                row = self._rows.get(schedule.name)
                if row is None:
                    self._rows[schedule.name] = _Row(
                        schedule, next_at(schedule), version=self._new_version(now), created_at=now
                    )
                    added.append(schedule.name)
                elif row.schedule != schedule:
                    self._redefine(row, schedule, next_at(schedule), now)
                    changed.append(schedule.name)
            names = {s.name for s in listed}
            removed = sorted(
                name
                for name, row in self._rows.items()
                if row.schedule.source is Source.FILE and name not in names
            )
            for name in removed:
                self._withdraw(name, now)
                del self._rows[name]
            if added or changed or removed:
                self._bump()
            return ReconcileResult(tuple(sorted(added)), tuple(sorted(changed)), tuple(removed))

    def put(self, schedule: Schedule, next_at: datetime | None, *, replace: bool) -> None:
        schedule = dataclasses.replace(schedule, source=Source.API)
        with self._lock:
            row = self._rows.get(schedule.name)
            if row is not None and row.schedule.source is Source.FILE:
                raise _owned_by_file(schedule.name)
            if row is not None and not replace:
                raise AlreadyExists(f"schedule {schedule.name!r} already exists")
            if row is None:
                now = self.clock.now()
                self._rows[schedule.name] = _Row(
                    schedule, next_at, version=self._new_version(now), created_at=now
                )
            else:
                self._redefine(row, schedule, next_at, self.clock.now())
            self._bump()

    def delete(self, name: str) -> None:
        with self._lock:
            row = self._get(name)
            if row.schedule.source is Source.FILE:
                raise _owned_by_file(name)
            self._withdraw(name, self.clock.now())
            del self._rows[name]
            self._bump()

    def set_paused(
        self, name: str, paused: bool, note: str | None, next_at: datetime | None
    ) -> None:
        with self._lock:
            row = self._get(name)
            if row.paused and not paused:
                row.next_at = next_at
            if paused:
                self._withdraw(name, self.clock.now())
            row.paused = paused
            row.note = note if paused else None
            row.version += 1
            self._bump()

    def _redefine(
        self, row: _Row, schedule: Schedule, next_at: datetime | None, now: datetime
    ) -> None:
        earliest = self._withdraw(schedule.name, now)
        if _timing(row.schedule) != _timing(schedule):
            row.next_at = next_at
        elif earliest is not None:  # decide those instants again, as now defined
            row.next_at = earliest
        row.schedule = schedule
        row.version += 1

    def _withdraw(self, name: str, now: datetime) -> datetime | None:
        """Take back `name`'s unclaimed, not manual fires not due yet; the earliest instant."""
        gone = [
            m
            for m in self._outbox.values()
            if m.schedule == name
            and m.scheduled_for > now
            and m.fire_id not in self._claimed
            and not self._fires[m.fire_id].manual
        ]
        for m in gone:
            del self._outbox[m.fire_id]
            del self._fires[m.fire_id]
            self._instants.discard((m.schedule, m.scheduled_for))
        row = self._rows.get(name)
        if gone and row is not None:  # the last fire is the latest one history still has
            left = [r.scheduled_for for r in self._fires.values() if r.schedule == name]
            row.last_at = max(left, default=None)
            row.fires = max(row.fires - len(gone), 0)
        return min((m.scheduled_for for m in gone), default=None)

    def _get(self, name: str) -> _Row:
        row = self._rows.get(name)
        if row is None:
            raise NotFound(f"no schedule named {name!r}")
        return row

    def get(self, name: str) -> StoredSchedule:
        with self._lock:
            return self._get(name).stored()

    def all(self) -> list[StoredSchedule]:
        with self._lock:
            return [self._rows[name].stored() for name in sorted(self._rows)]

    def page(self, where: ScheduleFilter, offset: int, limit: int) -> SchedulePage:
        with self._lock:
            chosen = [
                s for s in self.all() if where.matches(s.schedule.name, s.state, s.schedule.source)
            ]
            shown = tuple(chosen[offset : offset + limit])
            names = {s.schedule.name for s in shown}
            last: dict[str, FireRecord] = {}
            for record in self._fires.values():
                held = last.get(record.schedule)
                if record.schedule in names and (
                    held is None or held.scheduled_for < record.scheduled_for
                ):
                    last[record.schedule] = record
            return SchedulePage(shown, len(chosen), last)

    def _active(self, partition: Partition) -> list[_Row]:
        return [
            r
            for r in self._rows.values()
            if not r.paused and r.next_at is not None and partition.owns(r.schedule.name)
        ]

    def due(self, now: datetime, limit: int, partition: Partition = WHOLE) -> list[StoredSchedule]:
        with self._lock:
            rows = [
                r for r in self._active(partition) if r.next_at is not None and r.next_at <= now
            ]
            rows.sort(key=lambda r: (r.next_at, r.schedule.name))
            return [r.stored() for r in rows[:limit]]

    def next_due_at(self, partition: Partition = WHOLE) -> datetime | None:
        with self._lock:
            active = self._active(partition)
            return min((r.next_at for r in active if r.next_at is not None), default=None)

    def due_count(self, now: datetime, cap: int, partition: Partition = WHOLE) -> int:
        return len(self.due(now, cap, partition))

    def change_count(self) -> int:
        with self._lock:
            return self._changes

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the change counter differs from `since`, at most `timeout` s."""
        with self._changed:
            self._changed.wait_for(lambda: self._changes != since or self._closed, timeout)
            return self._changes

    # -- fire log --------------------------------------------------------------

    def record(
        self, lease: Lease | None, decisions: Sequence[Decision], advances: Sequence[Advance]
    ) -> list[str]:
        with self._lock:
            now = self.clock.now()
            if lease is not None:
                self._check(lease, now)
            moved = {
                a.name
                for a in advances
                if a.name not in self._rows or self._rows[a.name].version != a.version
            }
            for a in advances:
                if a.name not in moved:
                    row = self._rows[a.name]
                    row.next_at, row.last_at = a.next_at, a.last_at
                    row.fires += a.fires_added
            written: list[str] = []
            for d in decisions:
                key = (d.schedule, d.scheduled_for)
                if d.schedule in moved or key in self._instants or d.fire_id in self._fires:
                    continue
                self._instants.add(key)
                self._fires[d.fire_id] = FireRecord(
                    fire_id=d.fire_id,
                    schedule=d.schedule,
                    scheduled_for=d.scheduled_for,
                    outcome=d.outcome,
                    decided_at=now,
                    reason=d.reason,
                    manual=d.manual,
                    epoch=lease.epoch if lease is not None else None,
                )
                if d.outcome is Outcome.PENDING and d.message is not None:
                    self._outbox[d.fire_id] = d.message
                written.append(d.fire_id)
            if lease is None and written:
                self._bump()
            return written

    def _check(self, lease: Lease, now: datetime) -> None:
        held = self._leases.get(lease.partition, Lease("", 0, EPOCH))
        if held.token != lease.token or held.epoch != lease.epoch:
            raise Fenced(
                f"lease lost: held by {held.holder!r} at epoch {held.epoch}, "
                f"not {lease.holder!r} at epoch {lease.epoch}"
            )
        if held.expires_at <= now:
            late = (now - held.expires_at).total_seconds()
            raise Fenced(f"lease lost: epoch {held.epoch} expired {late:.3f}s ago (database clock)")

    def claim(
        self,
        lease: Lease,
        through: datetime,
        limit: int,
        known: Mapping[str, tuple[int, Message]] | None = None,
    ) -> list[Message]:
        with self._lock:
            self._check(lease, self.clock.now())
            unclaimed = self._unclaimed(lease.epoch, lease.partition)
            ready = [m for m in unclaimed if m.publish_at <= through]
            ready.sort(key=lambda m: (m.publish_at, m.fire_id))
            for m in ready[:limit]:
                self._claimed[m.fire_id] = lease.epoch
            return [_known(m, known or {}) for m in ready[:limit]]

    def _unclaimed(self, epoch: int, partition: Partition) -> list[Message]:
        return [
            m
            for m in self._outbox.values()
            if self._claimed.get(m.fire_id, -1) < epoch and partition.owns(m.schedule)
        ]

    def next_publish_at(self, epoch: int, partition: Partition = WHOLE) -> datetime | None:
        with self._lock:
            return min((m.publish_at for m in self._unclaimed(epoch, partition)), default=None)

    def _finish(self, fire_id: str, **changes: object) -> None:
        record = self._fires.get(fire_id)
        if record is not None and record.outcome is Outcome.PENDING:
            self._fires[fire_id] = dataclasses.replace(record, **changes)  # type: ignore[arg-type]
        self._outbox.pop(fire_id, None)
        self._claimed.pop(fire_id, None)

    def mark_sent(self, fire_ids: Sequence[str], sent_at: datetime) -> None:
        with self._lock:
            for fire_id in fire_ids:
                self._finish(fire_id, outcome=Outcome.SENT, sent_at=sent_at)

    def mark_failed(self, fire_id: str, reason: str, at: datetime) -> None:
        with self._lock:
            self._finish(fire_id, outcome=Outcome.FAILED, reason=reason, sent_at=at)

    def history(self, schedule: str | None, limit: int) -> list[FireRecord]:
        with self._lock:
            records = [
                r for r in self._fires.values() if schedule is None or r.schedule == schedule
            ]
        records.sort(key=lambda r: r.schedule)
        records.sort(key=lambda r: r.scheduled_for, reverse=True)
        return records[:limit]

    def backlog(self) -> int:
        with self._lock:
            return len(self._outbox)

    def backlogs(self, count: int) -> list[int]:
        found = [0] * count
        with self._lock:
            for m in self._outbox.values():
                found[bucket(m.schedule) % count] += 1
        return found

    def lags(self, limit: int) -> list[float]:
        with self._lock:
            sent = [
                r
                for r in self._fires.values()
                if r.outcome is Outcome.SENT and r.sent_at and not r.manual and r.reason is None
            ]
        sent.sort(key=lambda r: r.scheduled_for, reverse=True)
        return [(r.sent_at - r.scheduled_for).total_seconds() for r in sent[:limit] if r.sent_at]

    def prune(self, before: datetime, limit: int) -> int:
        with self._lock:
            settled = sorted(
                (r for r in self._fires.values() if r.outcome is not Outcome.PENDING),
                key=lambda r: (r.scheduled_for, r.schedule),
            )
            gone = [r for r in settled if r.scheduled_for < before][:limit]
            if len(gone) < limit:
                gone_ids = {r.fire_id for r in gone}
                gone += [r for r in self._over_limit() if r.fire_id not in gone_ids][
                    : limit - len(gone)
                ]
            for r in gone:
                del self._fires[r.fire_id]
                self._instants.discard((r.schedule, r.scheduled_for))
            return len(gone)

    def _over_limit(self) -> list[FireRecord]:
        """Settled rows beyond their schedule's history_limit, oldest first."""
        over: list[FireRecord] = []
        for name, row in self._rows.items():
            cap = row.schedule.history_limit
            if cap is None:
                continue
            mine = sorted(
                (r for r in self._fires.values() if r.schedule == name),
                key=lambda r: r.scheduled_for,
                reverse=True,
            )
            over += [r for r in mine[cap:] if r.outcome is not Outcome.PENDING]
        return sorted(over, key=lambda r: (r.scheduled_for, r.schedule))

    # -- lease -----------------------------------------------------------------

    def acquire(
        self, holder: str, ttl: timedelta, token: str, partition: Partition = WHOLE
    ) -> Lease | None:
        with self._lock:
            now = self.clock.now()
            held = self._leases.get(partition, Lease("", 0, EPOCH, partition=partition))
            if held.expires_at > now and held.token != token:
                return None
            if any(p.count != partition.count for p in self._held(now)):
                return None  # another partitioning still leads: see the SQL acquire
            newest = max((x.epoch for x in self._leases.values()), default=0)
            self._leases[partition] = Lease(holder, newest + 1, now + ttl, token, partition)
            return self._leases[partition]

    def _held(self, now: datetime) -> dict[Partition, Lease]:
        return {p: x for p, x in self._leases.items() if x.holder and x.expires_at > now}

    def _ours(self, lease: Lease, now: datetime) -> bool:
        held = self._leases.get(lease.partition)
        return (
            held is not None
            and (held.token, held.epoch) == (lease.token, lease.epoch)
            and held.expires_at > now
        )

    def renew(self, lease: Lease, ttl: timedelta) -> Lease | None:
        with self._lock:
            now = self.clock.now()
            if not self._ours(lease, now):
                return None
            renewed = dataclasses.replace(self._leases[lease.partition], expires_at=now + ttl)
            self._leases[lease.partition] = renewed
            return renewed

    def release(self, lease: Lease) -> None:
        with self._lock:
            now = self.clock.now()
            if self._ours(lease, now):
                released = dataclasses.replace(self._leases[lease.partition], expires_at=now)
                self._leases[lease.partition] = released

    def current(self, partition: Partition = WHOLE) -> Lease | None:
        with self._lock:
            return self._held(self.clock.now()).get(partition)

    def leases(self) -> list[Lease]:
        with self._lock:
            held = self._held(self.clock.now())
        return [held[p] for p in sorted(held, key=lambda p: (p.count, p.index))]

    def db_now(self) -> datetime:
        return self.clock.now()

    def heartbeat(self, holder: str, token: str, *, leaving: bool = False) -> None:
        with self._lock:
            if leaving:
                self._instances.pop(token, None)
                return
            now = self.clock.now()
            seen = self._instances.get(token)
            started = seen.started_at if seen is not None else now
            self._instances[token] = Instance(holder, token, started, now)

    def instances(self, since: datetime) -> list[Instance]:
        with self._lock:
            seen = [i for i in self._instances.values() if i.last_seen >= since]
        return sorted(seen, key=lambda i: (i.started_at, i.token))

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
