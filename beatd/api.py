"""The Python API: the same operations as the CLI, over a config file and a store.

`Beat` parses user input at the edge (through the same codec as the TOML
file), computes first instants with the pure timing engine, and writes only
through the Store protocols; a change opens the database as `beatd run` does
(an empty one first gets beatd's tables).

Reads show the config file as it is now (SPEC §5): its schedules, merged
with the database's API schedules and run state (pause, last fire) when the
database holds beatd's tables, else the file alone. A file schedule the
running daemon has not loaded as it now reads is marked `reload_pending`.
A naive instant given to a read (`after=`, `until=`, backfill's range) is
read in `[beatd] timezone`.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

from beatd import planner, timing, views
from beatd.clock import Clock, SystemClock
from beatd.codec import check_instant, format_instant, localize, schedule_from_table
from beatd.config import Settings, load_settings, settings_from_document
from beatd.durations import format_duration
from beatd.errors import AlreadyExists, BeatdError, BrokerError, ConfigError, Conflict, NotFound
from beatd.ids import fire_id
from beatd.model import (
    Decision,
    Every,
    Fire,
    FireRecord,
    Instance,
    Lease,
    Outcome,
    Schedule,
    ScheduleFilter,
    Source,
    StoredSchedule,
)
from beatd.publish import open_publisher
from beatd.publish.base import Publisher
from beatd.publish.messages import build_message
from beatd.redact import redact
from beatd.store import has_tables, open_or_create, open_store
from beatd.store.base import Store
from beatd.upcoming import upcoming as merge_upcoming
from beatd.views import ScheduleInfo

MAX_HISTORY = 100_000  # rows one history call may return
MAX_BACKFILL = 100_000  # instants one backfill call may record
MAX_PAGE = 1_000  # schedules one page may hold
LAG_SAMPLE = 1_000  # recent fires status() reads the lag of


@dataclass(frozen=True, slots=True)
class Backfill:
    """What `backfill` recorded."""

    schedule: str
    instants: int  # instants of the schedule in the range
    recorded: tuple[str, ...]  # ids of the fires recorded now (the others were already)
    expired: int  # of those, how many were past their `expires` already: never sent


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of `list`: the schedules on it and how many match in all."""

    schedules: tuple[ScheduleInfo, ...]
    total: int


@dataclass(frozen=True, slots=True)
class Member:
    """A running process of the cluster, as `status` lists it."""

    holder: str  # its instance id
    role: str  # leader | standby
    started_at: datetime
    last_seen: datetime
    partitions: tuple[int, ...] = ()  # the partitions it holds ([beatd] partitions > 1)


@dataclass(frozen=True, slots=True)
class Held:
    """A partition of `[beatd] partitions` (P > 1): who holds its lease, at which epoch."""

    partition: int
    holder: str | None  # None: free (its work waits for an instance to take it)
    epoch: int | None
    lease_expires: datetime | None


def holders(leases: Sequence[Lease], count: int) -> tuple[Held, ...]:
    """Each partition of `count`, from the held leases: one row each, free ones too."""
    held = {x.partition.index: x for x in leases if x.partition.count == count}
    return tuple(
        Held(i, x.holder, x.epoch, x.expires_at)
        if (x := held.get(i))
        else Held(i, None, None, None)
        for i in range(count)
    )


@dataclass(frozen=True, slots=True)
class Status:
    """What `beatd status` reports: who leads, the backlog, database and broker health.

    `database` and `broker` are "ok" or "error: why", with passwords masked;
    `problems` the same errors as lines to show, `exit_code` the highest of
    theirs (0 when healthy). `lags` are the seconds from instant to the
    broker's confirm of the most recent fires sent on schedule (not triggers,
    backfills or drops).
    """

    leader: str | None
    epoch: int | None
    lease_expires: datetime | None
    backlog: int | None
    database: str
    broker: str
    database_url: str
    broker_url: str
    instances: tuple[Member, ...] = ()  # every process seen within two leases
    partitions: tuple[Held, ...] = ()  # P > 1: who holds each (no one leader then)
    lags: tuple[float, ...] = ()
    problems: tuple[str, ...] = ()
    exit_code: int = 0

    @property
    def healthy(self) -> bool:
        return not self.problems


def _member(instance: Instance, leases: Sequence[Lease]) -> Member:
    held = [x.partition for x in leases if x.token == instance.token]
    role = "leader" if held else "standby"
    indexes = tuple(p.index for p in held if not p.whole)
    return Member(instance.holder, role, instance.started_at, instance.last_seen, indexes)


class Beat:
    """Manage schedules and read upcoming fires and history.

    >>> beat = Beat.from_config("beatd.toml")          # doctest: +SKIP
    >>> beat.add("ping", every="30s", task="app.tasks.ping")  # doctest: +SKIP
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
    ) -> None:
        if settings is None:
            settings = settings_from_document({}, env={})
        if database_url is not None:
            settings = _with_database(settings, database_url)
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._store: Store | None = None
        self._publisher: Publisher | None = None  # kept for status(): a console asks often

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, clock: Clock | None = None) -> Beat:
        return cls(settings=load_settings(path), clock=clock)

    # -- lifecycle -------------------------------------------------------

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def __enter__(self) -> Beat:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def store(self) -> Store:
        """The database; opening it checks the schema (SchemaError says what to run)."""
        if self._store is None:
            self._store = open_store(self.settings.database)
        return self._store

    def _writable(self) -> Store:
        """The database for a change: an empty one first gets beatd's tables, as `run` does."""
        if self._store is None:
            self._store = open_or_create(self.settings.database)
        return self._store

    def _uses_database(self) -> bool:
        return self._store is not None or has_tables(self.settings.database)

    @cached_property
    def _in_file(self) -> dict[str, Schedule]:
        return {s.name: s for s in self.settings.schedules}

    def instant(self, value: datetime, what: str = "instant") -> datetime:
        """`value` as an aware instant: a naive one is read in `[beatd] timezone`.

        ConfigError names `what` when it is out of range (years 2 to 9997).
        """
        if value.tzinfo is not None and value.utcoffset() is not None:
            return check_instant(value, what)
        try:
            return localize(value, self.settings.timezone)
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None

    # -- changes ---------------------------------------------------------

    def add(self, name: str, *, replace: bool = False, **options: Any) -> Schedule:
        """Add an API schedule: one of cron=, every=, rrule=, at= and task=, plus SPEC §2 options.

        Options are validated by the same code as the TOML file. The new
        schedule is never due for instants before now; a one-off whose
        instant is already past is recorded as missed at once (SPEC §4).
        Raises AlreadyExists when the name is taken and not `replace`.
        """
        self._refuse_file_owned(name, "add")
        schedule = self.parse(name, options)
        now = self.clock.now()
        store = self._writable()
        try:
            store.put(schedule, timing.next_after(schedule, now), replace=replace)
        except AlreadyExists as exc:
            raise AlreadyExists(f"{exc}; pass replace=True to change it") from None
        missed = planner.missed_once(schedule, now)
        if missed is not None:
            store.record(None, [missed], [])
        return schedule

    def parse(self, name: str, options: Mapping[str, Any]) -> Schedule:
        table = {key: value for key, value in options.items() if value is not None}
        table = {k: _to_toml_value(v) for k, v in table.items()}
        return schedule_from_table(name, table, self.settings.defaults, Source.API)

    def remove(self, name: str) -> None:
        self._refuse_file_owned(name, "remove")
        self._writable().delete(name)

    def _refuse_file_owned(self, name: str, verb: str) -> None:
        if name in self._in_file:
            where = self.settings.path or "the config file"
            raise Conflict(
                f"cannot {verb} {name!r}: it is declared in {where}; edit the file and reload"
            )

    def pause(self, name: str, note: str | None = None) -> None:
        with self._not_loaded_yet(name, "pause"):
            self._writable().set_paused(name, True, note, None)

    def resume(self, name: str) -> None:
        """Resume; fires that fell in the pause are not made up."""
        store = self._writable()
        with self._not_loaded_yet(name, "resume"):
            schedule = store.get(name).schedule
        store.set_paused(name, False, None, self._first_at(schedule))

    @contextmanager
    def _not_loaded_yet(self, name: str, verb: str) -> Iterator[None]:
        """NotFound for a file schedule no daemon has loaded yet says so."""
        try:
            yield
        except NotFound:
            if name not in self._in_file:
                raise
            raise NotFound(
                f"cannot {verb} {name!r}: no daemon has loaded it from the config file yet; "
                "start or reload the daemon first"
            ) from None

    def trigger(self, name: str) -> str:
        """Record a fire now, marked manual; the leader's relay sends it. Returns its id."""
        schedule = self.get(name).schedule
        now = self.clock.now()
        decision = Decision(
            schedule=name,
            scheduled_for=now,
            fire_id=fire_id(name, now),
            outcome=Outcome.PENDING,
            message=build_message(schedule, now, now, manual=True),
            manual=True,
        )
        self._writable().record(None, [decision], [])
        return decision.fire_id

    def backfill(self, name: str, start: datetime, end: datetime) -> Backfill:
        """Record every instant in [start, end] not recorded yet, for the leader to send.

        Naive bounds are read in `[beatd] timezone`. Fires whose `expires`
        has passed already are recorded too; the leader marks them failed,
        unsent, and `expired` counts them.
        """
        start, end = self.instant(start, "--from"), self.instant(end, "--to")
        if end < start:
            raise ConfigError("backfill: --to is before --from")
        schedule = self.get(name).schedule
        self._refuse_pruned_range(schedule, start)
        # The cap bounds the work, not only the rows: an interval's instants are counted
        # without enumerating them; other kinds enumerate at most one past the cap.
        if _every_beyond(schedule, start, end):
            raise _too_many(start, end)
        found = timing.fires_between(schedule, start - timedelta(microseconds=1), end)
        instants = list(itertools.islice(found, MAX_BACKFILL + 1))
        if len(instants) > MAX_BACKFILL:
            raise _too_many(start, end)
        now = self.clock.now()
        messages = [build_message(schedule, at, now) for at in instants]
        decisions = [
            Decision(
                schedule=name,
                scheduled_for=at,
                fire_id=message.fire_id,
                outcome=Outcome.PENDING,
                reason="backfill",
                message=message,
            )
            for at, message in zip(instants, messages, strict=True)
        ]
        recorded = self._writable().record(None, decisions, [])
        new = set(recorded)
        expired = sum(
            1
            for m in messages
            if m.fire_id in new and m.expires_at is not None and m.expires_at <= now
        )
        return Backfill(name, len(instants), tuple(recorded), expired)

    def _refuse_pruned_range(self, schedule: Schedule, start: datetime) -> None:
        """Backfill tells "not fired yet" by the history: refuse where it may be pruned.

        History is kept for `[beatd] keep_history` (and a schedule's newest
        `history_limit` rows); before that, a missing row may be a fire that
        was sent and pruned, and sending it again would double it.
        """
        kept_since = self.clock.now() - self.settings.keep_history
        why = f"[beatd] keep_history = {format_duration(self.settings.keep_history)}"
        cap = schedule.history_limit
        if cap is not None:
            newest = self.store.history(schedule.name, cap)
            if len(newest) == cap and newest[-1].scheduled_for > kept_since:
                kept_since = newest[-1].scheduled_for
                why = f"history_limit = {cap} of {schedule.name!r}"
        if start < kept_since:
            raise ConfigError(
                f"backfill: --from {format_instant(start)} is before the history kept "
                f"({why}: since {format_instant(kept_since)}); beatd cannot tell which "
                "earlier instants were sent, so it does not send them again"
            )

    # -- reads -----------------------------------------------------------

    def get(self, name: str) -> ScheduleInfo:
        """One schedule as `list` shows it; NotFound."""
        in_file = self._in_file.get(name)
        now = self.clock.now()
        if not self._uses_database():
            if in_file is None:
                raise NotFound(f"no schedule named {name!r}")
            return views.file_view(in_file, None, now, database=False).info
        try:
            stored: StoredSchedule | None = self.store.get(name)
        except NotFound:
            if in_file is None:
                raise
            stored = None
        if in_file is not None:
            return views.file_view(in_file, stored, now, database=True).info
        assert stored is not None
        if stored.schedule.source is Source.FILE:  # gone from the file: gone at the next load
            raise NotFound(f"no schedule named {name!r}")
        return views.stored_view(stored).info

    def list(self) -> builtins.list[ScheduleInfo]:
        """Every schedule, by name: the file as it is now, and the database's API schedules."""
        return [view.info for view in self._views(self.clock.now())]

    def page(
        self, where: ScheduleFilter | None = None, offset: int = 0, limit: int = 50
    ) -> Listing:
        """Schedules matching `where`, by name, from `offset`: `list` a page at a time.

        With a database, the database filters and pages (quick at 100,000
        schedules) what it holds: API schedules and the file's as the running
        daemon loaded them, each shown as the file now defines it and marked
        `reload_pending` where it differs; a file schedule no daemon has
        loaded yet is listed from its first load. Each carries its newest
        history row.
        """
        where = where or ScheduleFilter()
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise ConfigError(f"page: offset must be 0 or more and limit 1 to {MAX_PAGE}")
        if not self._uses_database():
            chosen = [i for i in self.list() if where.matches(i.name, i.state, i.source)]
            return Listing(tuple(chosen[offset : offset + limit]), len(chosen))
        page = self.store.page(where, offset, limit)
        now = self.clock.now()
        shown = []
        for stored in page.schedules:
            in_file = self._in_file.get(stored.schedule.name)
            view = (
                views.file_view(in_file, stored, now, database=True)
                if in_file is not None and stored.schedule.source is Source.FILE
                else views.stored_view(stored)
            )
            last = page.last.get(stored.schedule.name)
            shown.append(dataclasses.replace(view.info, last_fire=last))
        return Listing(tuple(shown), page.total)

    def status(self) -> Status:
        """The lease, instances, backlog and recent lag from the database; the broker's health."""
        lease, backlog = None, None
        members: tuple[Member, ...] = ()
        lags: tuple[float, ...] = ()
        partitions: tuple[Held, ...] = ()
        failed: dict[str, BeatdError] = {}
        try:
            leases = self.store.leases()
            whole = [x for x in leases if x.partition.whole]  # P = 1: the one leader's
            lease = whole[0] if whole and self.settings.partitions == 1 else None
            if self.settings.partitions > 1:
                partitions = holders(leases, self.settings.partitions)
            backlog = self.store.backlog()
            seen = self.store.db_now() - 2 * max(self.settings.lease, timedelta(seconds=2))
            members = tuple(_member(i, leases) for i in self.store.instances(seen))
            lags = tuple(self.store.lags(LAG_SAMPLE))
        except BeatdError as exc:
            failed["database"] = exc
        try:
            if self._publisher is None:
                self._publisher = open_publisher(self.settings.broker)
            unreachable = self._publisher.check()  # reconnects when the connection is gone
            if unreachable is not None:
                raise BrokerError(unreachable)
        except BeatdError as exc:
            failed["broker"] = exc
        shown = {what: self.shown(exc) for what, exc in failed.items()}
        return Status(
            leader=lease.holder if lease else None,
            epoch=lease.epoch if lease else None,
            lease_expires=lease.expires_at if lease else None,
            backlog=backlog,
            database=f"error: {shown['database']}" if "database" in shown else "ok",
            broker=f"error: {shown['broker']}" if "broker" in shown else "ok",
            database_url=redact(self.settings.database),
            broker_url=redact(self.settings.broker),
            instances=members,
            partitions=partitions,
            lags=lags,
            problems=tuple(shown.values()),
            exit_code=max((exc.exit_code for exc in failed.values()), default=0),
        )

    def shown(self, error: object) -> str:
        """An error's text fit to show: without the database's and broker's passwords."""
        return redact(str(error), self.settings.database, self.settings.broker)

    def _views(self, now: datetime) -> builtins.list[views.View]:
        stored = self.store.all() if self._uses_database() else None
        return views.merged(self.settings.schedules, stored, now)

    def upcoming(
        self,
        limit: int = 10,
        after: datetime | None = None,
        until: datetime | None = None,
        schedule: str | None = None,
    ) -> builtins.list[Fire]:
        """The next fires, merged across schedules, by instant then name; `after` is exclusive.

        Naive `after` and `until` are read in `[beatd] timezone`.
        """
        now = self.clock.now()
        start = self.instant(after, "after") if after is not None else now
        end = self.instant(until, "until") if until is not None else None
        shown = {view.info.name: view for view in self._views(now)}

        def start_at(s: Schedule) -> datetime | None:
            view = shown[s.name]
            if view.info.state in ("paused", "disabled"):
                return None
            # The store's next_at is the first undecided instant: earlier ones are history.
            # A schedule the store has no history for starts at `after`; its next_at is
            # the first fire after now, so it is that start when `after` is now.
            return view.info.next_at if view.decided or start == now else start

        return merge_upcoming(
            [view.info.schedule for view in shown.values()],
            now,
            limit=limit,
            after=start,
            until=end,
            schedule=schedule,
            start_at=start_at,
        )

    def history(self, name: str | None = None, limit: int = 50) -> builtins.list[FireRecord]:
        """Past fires, newest scheduled instant first."""
        if not 1 <= limit <= MAX_HISTORY:
            raise ConfigError(f"limit must be from 1 to {MAX_HISTORY}, got {limit}")
        records = self.store.history(name, limit)
        if name is not None and not records:
            self.get(name)  # NotFound for a name that never existed
        return records

    def _first_at(self, schedule: Schedule) -> datetime | None:
        return timing.next_after(schedule, self.clock.now())


def _every_beyond(schedule: Schedule, start: datetime, end: datetime) -> bool:
    """Whether an interval schedule fires more than MAX_BACKFILL times in [start, end]."""
    spec = schedule.spec
    first = timing.next_after(schedule, start - timedelta(microseconds=1))
    if not isinstance(spec, Every) or first is None:
        return False
    if schedule.end is not None:
        end = min(end, schedule.end)
    try:
        return first + MAX_BACKFILL * spec.period <= end  # instants are first + k·period
    except OverflowError:  # past year 9999, so past `end`
        return False


def _too_many(start: datetime, end: datetime) -> ConfigError:
    return ConfigError(
        f"backfill: more than {MAX_BACKFILL} instants from {start.isoformat()} "
        f"to {end.isoformat()}; backfill a shorter range at a time"
    )


def _with_database(settings: Settings, url: str) -> Settings:
    return dataclasses.replace(settings, database=url)


def _to_toml_value(value: Any) -> Any:
    """API callers may pass Python values TOML would have parsed: keep them as they are."""
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if isinstance(value, tuple):
        return list(value)
    return value


@contextmanager
def opened(path: str | Path | None) -> Iterator[Beat]:
    """A Beat for one CLI command, closed afterwards."""
    beat = Beat.from_config(path)
    try:
        yield beat
    finally:
        beat.close()
