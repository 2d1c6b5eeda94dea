"""The SQL store: PostgreSQL in production, SQLite embedded; one class, both dialects.

Every method is one transaction on a pooled connection, wrapped in the
error boundary (`engine.mapped_errors`), so only BeatdError subclasses
escape. Writers that change definitions serialise on an advisory lock
(PostgreSQL) or `BEGIN IMMEDIATE` (SQLite).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import URL, Engine

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
from beatd.store.base import NextAt, ReconcileResult
from beatd.store.sql import engine as eng
from beatd.store.sql import firelog, history, lease, schedules

POLL_SECONDS = 0.1
"""How often `wait_for_change` polls the counter where LISTEN is not available."""


class SqlStore:
    """A Store over SQLAlchemy. Checks the schema revision when opened."""

    def __init__(self, url: str | URL, *, check_schema: bool = True) -> None:
        self.url = eng.parse_url(url) if isinstance(url, str) else url
        self.engine: Engine = eng.make_engine(self.url)
        self._listener: Any = None
        self._listener_lock = threading.Lock()
        self._closed = threading.Event()
        self._decoded: schedules.Decoded = {}  # the due query's definition cache
        self._pruned = 0  # history rows deleted since the last VACUUM (history.needs_vacuum)
        if check_schema:
            from beatd.store.sql import migrate

            try:
                migrate.check_engine(self.engine, self.url)
            except BaseException:
                self.engine.dispose()
                raise

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _read(self) -> Any:
        return eng.transaction(self.engine, self.url, write=False)

    def _write(self) -> Any:
        return eng.transaction(self.engine, self.url, write=True)

    # -- schedules -------------------------------------------------------------

    def load_file(self, schedules_: Sequence[Schedule], next_at: NextAt) -> ReconcileResult:
        with self._write() as conn:
            # The due query's cache gets the file's own objects: no decoding at the first tick.
            now = eng.db_now(conn)
            return schedules.load_file(conn, schedules_, next_at, now, self._decoded)

    def put(self, schedule: Schedule, next_at: datetime | None, *, replace: bool) -> None:
        with self._write() as conn:
            schedules.put(conn, schedule, next_at, replace=replace, now=eng.db_now(conn))

    def delete(self, name: str) -> None:
        with self._write() as conn:
            schedules.delete(conn, name, eng.db_now(conn))

    def set_paused(
        self, name: str, paused: bool, note: str | None, next_at: datetime | None
    ) -> None:
        with self._write() as conn:
            schedules.set_paused(conn, name, paused, note, next_at, eng.db_now(conn))

    def get(self, name: str) -> StoredSchedule:
        with self._read() as conn:
            return schedules.get(conn, name)

    def all(self) -> list[StoredSchedule]:
        with self._read() as conn:
            return schedules.all_(conn)

    def page(self, where: ScheduleFilter, offset: int, limit: int) -> SchedulePage:
        with self._read() as conn:
            return schedules.page(conn, where, offset, limit)

    def due(self, now: datetime, limit: int, partition: Partition = WHOLE) -> list[StoredSchedule]:
        with self._read() as conn:
            return schedules.due(conn, now, limit, self._decoded, partition)

    def next_due_at(self, partition: Partition = WHOLE) -> datetime | None:
        with self._read() as conn:
            return schedules.next_due_at(conn, partition)

    def due_count(self, now: datetime, cap: int, partition: Partition = WHOLE) -> int:
        with self._read() as conn:
            return schedules.due_count(conn, now, cap, partition)

    def change_count(self) -> int:
        with self._read() as conn:
            return schedules.change_count(conn)

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the change counter differs from `since`, at most `timeout` s.

        Returns the counter. On PostgreSQL it sleeps on LISTEN beatd_changes
        (a dedicated connection, opened on first use); elsewhere it polls the
        counter every POLL_SECONDS (and `close()` wakes it). One waiter at a
        time on PostgreSQL; `close()` waits for it (at most `timeout`).
        """
        if self.dialect == "postgresql":
            return self._wait_notified(since, timeout)
        deadline = timeout
        while True:
            count = self.change_count()
            if count != since or deadline <= 0 or self._closed.is_set():
                return count
            step = min(POLL_SECONDS, deadline)
            self._closed.wait(step)
            deadline -= step

    def _wait_notified(self, since: int, timeout: float) -> int:
        with eng.mapped_errors(self.url), self._listener_lock:
            try:
                return self._listen(since, timeout)
            except BaseException:
                self._drop_listener()  # a broken connection is reopened next time
                raise

    def _listen(self, since: int, timeout: float) -> int:
        if self._listener is None:
            import psycopg

            conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._listener = psycopg.connect(conninfo, autocommit=True)
            self._listener.execute(f"LISTEN {schedules.CHANNEL}")
        count = self.change_count()  # after LISTEN: no change slips between
        if count != since or timeout <= 0:
            return count
        for _ in self._listener.notifies(timeout=timeout, stop_after=1):
            pass
        return self.change_count()

    # -- fire log --------------------------------------------------------------

    def record(
        self, lease_: Lease | None, decisions: Sequence[Decision], advances: Sequence[Advance]
    ) -> list[str]:
        with self._write() as conn:
            written = firelog.record(conn, lease_, decisions, advances)
            if lease_ is None and written:
                schedules.bump(conn)
            return written

    def claim(
        self,
        lease_: Lease,
        through: datetime,
        limit: int,
        known: Mapping[str, tuple[int, Message]] | None = None,
    ) -> list[Message]:
        with self._write() as conn:
            return firelog.claim(conn, lease_, through, limit, known or {})

    def next_publish_at(self, epoch: int, partition: Partition = WHOLE) -> datetime | None:
        with self._read() as conn:
            return firelog.next_publish_at(conn, epoch, partition)

    def mark_sent(self, fire_ids: Sequence[str], sent_at: datetime) -> None:
        if not fire_ids:
            return
        with self._write() as conn:
            firelog.mark_sent(conn, fire_ids, sent_at)

    def mark_failed(self, fire_id: str, reason: str, at: datetime) -> None:
        with self._write() as conn:
            firelog.mark_failed(conn, fire_id, reason, at)

    def history(self, schedule: str | None, limit: int) -> list[FireRecord]:
        with self._read() as conn:
            return firelog.history(conn, schedule, limit)

    def backlog(self) -> int:
        with self._read() as conn:
            return firelog.backlog(conn)

    def backlogs(self, count: int) -> list[int]:
        with self._read() as conn:
            return firelog.backlogs(conn, count)

    def lags(self, limit: int) -> list[float]:
        with self._read() as conn:
            return firelog.lags(conn, limit)

    def prune(self, before: datetime, limit: int) -> int:
        with self._write() as conn:
            pruned = history.prune_expired(conn, before, limit)
        if pruned < limit:  # the expired rows are done: the caps get the rest of the batch
            with self._read() as conn:
                caps = history.capped(conn)
            if caps:
                with self._write() as conn:
                    pruned += history.prune_over_limit(conn, caps, limit - pruned)
        self._pruned += pruned
        if pruned < limit and self.dialect == "postgresql":  # a round ended
            with self._read() as conn:
                due = history.needs_vacuum(conn, self._pruned)
            if due:
                with eng.mapped_errors(self.url), self.engine.connect() as conn:
                    history.vacuum(conn)
                self._pruned = 0
        return pruned

    # -- lease -----------------------------------------------------------------

    def acquire(
        self, holder: str, ttl: timedelta, token: str, partition: Partition = WHOLE
    ) -> Lease | None:
        with self._write() as conn:
            return lease.acquire(conn, holder, ttl, token, partition)

    def renew(self, lease_: Lease, ttl: timedelta) -> Lease | None:
        with self._write() as conn:
            return lease.renew(conn, lease_, ttl)

    def release(self, lease_: Lease) -> None:
        with self._write() as conn:
            lease.release(conn, lease_)

    def current(self, partition: Partition = WHOLE) -> Lease | None:
        with self._read() as conn:
            return lease.current(conn, partition)

    def leases(self) -> list[Lease]:
        with self._read() as conn:
            return lease.held(conn)

    def db_now(self) -> datetime:
        with self._read() as conn:
            return eng.db_now(conn)

    def heartbeat(self, holder: str, token: str, *, leaving: bool = False) -> None:
        with self._write() as conn:
            lease.heartbeat(conn, holder, token, leaving)

    def instances(self, since: datetime) -> list[Instance]:
        with self._read() as conn:
            return lease.seen_since(conn, since)

    def _drop_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:  # closing a dead connection
                pass
            self._listener = None

    def close(self) -> None:
        self._closed.set()
        with self._listener_lock:
            self._drop_listener()
        self.engine.dispose()
