"""The Python API: the same operations as the CLI, over a config file and a store.

`Beat` parses user input at the edge (through the same codec as the TOML
file), computes first instants with the pure timing engine, and writes only
through the Store protocols. Reads use the database when it holds beatd's
tables, else the config file alone, so `upcoming` works with no database.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from beatd import timing
from beatd.clock import Clock, SystemClock
from beatd.codec import check_instant, schedule_from_table
from beatd.config import Settings, load_settings, settings_from_document
from beatd.errors import ConfigError, Conflict, NotFound
from beatd.ids import fire_id
from beatd.model import Decision, Every, Fire, FireRecord, Outcome, Schedule, Source, StoredSchedule
from beatd.publish.messages import build_message
from beatd.store import has_tables, open_store
from beatd.store.base import Store
from beatd.upcoming import upcoming as merge_upcoming

MAX_HISTORY = 100_000  # rows one history call may return
MAX_BACKFILL = 100_000  # instants one backfill call may record


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as `list` shows it."""

    schedule: Schedule
    next_at: datetime | None
    last_at: datetime | None
    state: str  # active | paused | disabled | finished
    note: str | None

    @property
    def name(self) -> str:
        return self.schedule.name

    @property
    def source(self) -> str:
        return str(self.schedule.source)


def _state(stored: StoredSchedule) -> str:
    if stored.paused:
        return "paused"
    if not stored.schedule.enabled:
        return "disabled"
    return "active" if stored.next_at is not None else "finished"


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

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, clock: Clock | None = None) -> Beat:
        return cls(settings=load_settings(path), clock=clock)

    # -- lifecycle -------------------------------------------------------

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

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

    def _uses_database(self) -> bool:
        return self._store is not None or has_tables(self.settings.database)

    # -- changes ---------------------------------------------------------

    def add(self, name: str, *, replace: bool = False, **options: Any) -> Schedule:
        """Add an API schedule: one of cron=, every=, rrule=, at= and task=, plus SPEC §2 options.

        Options are validated by the same code as the TOML file. The new
        schedule is never due for instants before now.
        """
        self._refuse_file_owned(name, "add")
        schedule = self.parse(name, options)
        self.store.put(schedule, self._first_at(schedule), replace=replace)
        return schedule

    def parse(self, name: str, options: Mapping[str, Any]) -> Schedule:
        table = {key: value for key, value in options.items() if value is not None}
        table = {k: _to_toml_value(v) for k, v in table.items()}
        return schedule_from_table(name, table, self.settings.defaults, Source.API)

    def remove(self, name: str) -> None:
        self._refuse_file_owned(name, "remove")
        self.store.delete(name)

    def _refuse_file_owned(self, name: str, verb: str) -> None:
        if any(s.name == name for s in self.settings.schedules):
            where = self.settings.path or "the config file"
            raise Conflict(
                f"cannot {verb} {name!r}: it is declared in {where}; edit the file and reload"
            )

    def pause(self, name: str, note: str | None = None) -> None:
        self.store.set_paused(name, True, note, None)

    def resume(self, name: str) -> None:
        """Resume; fires that fell in the pause are not made up."""
        schedule = self.store.get(name).schedule
        self.store.set_paused(name, False, None, self._first_at(schedule))

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
        self.store.record(None, [decision], [])
        return decision.fire_id

    def backfill(self, name: str, start: datetime, end: datetime) -> int:
        """Record every instant in [start, end] not recorded yet; returns how many were new."""
        start, end = check_instant(start, "--from"), check_instant(end, "--to")
        if end < start:
            raise ConfigError("backfill: --to is before --from")
        schedule = self.get(name).schedule
        # The cap bounds the work, not only the rows: an interval's instants are counted
        # without enumerating them; other kinds enumerate at most one past the cap.
        if _every_beyond(schedule, start, end):
            raise _too_many(start, end)
        found = timing.fires_between(schedule, start - timedelta(microseconds=1), end)
        instants = list(itertools.islice(found, MAX_BACKFILL + 1))
        if len(instants) > MAX_BACKFILL:
            raise _too_many(start, end)
        now = self.clock.now()
        decisions = [
            Decision(
                schedule=name,
                scheduled_for=at,
                fire_id=fire_id(name, at),
                outcome=Outcome.PENDING,
                reason="backfill",
                message=build_message(schedule, at, now),
            )
            for at in instants
        ]
        return len(self.store.record(None, decisions, []))

    # -- reads -----------------------------------------------------------

    def get(self, name: str) -> ScheduleInfo:
        if self._uses_database():
            s = self.store.get(name)
            return ScheduleInfo(s.schedule, s.next_at, s.last_at, _state(s), s.note)
        for info in self.list():
            if info.name == name:
                return info
        raise NotFound(f"no schedule named {name!r}")

    def list(self) -> builtins.list[ScheduleInfo]:
        if self._uses_database():
            return [
                ScheduleInfo(s.schedule, s.next_at, s.last_at, _state(s), s.note)
                for s in self.store.all()
            ]
        now = self.clock.now()
        return [
            ScheduleInfo(
                s,
                timing.next_after(s, now),
                None,
                "active" if s.enabled else "disabled",
                None,
            )
            for s in sorted(self.settings.schedules, key=lambda s: s.name)
        ]

    def upcoming(
        self,
        limit: int = 10,
        after: datetime | None = None,
        until: datetime | None = None,
        schedule: str | None = None,
    ) -> builtins.list[Fire]:
        """The next fires, merged across schedules, by instant then name; `after` is exclusive."""
        if not self._uses_database():
            return merge_upcoming(
                self.settings.schedules,
                self.clock.now(),
                limit=limit,
                after=after,
                until=until,
                schedule=schedule,
            )
        infos = {info.name: info for info in self.list()}

        def start_at(s: Schedule) -> datetime | None:
            # The store's next_at is the first undecided instant: earlier ones are history.
            info = infos[s.name]
            return info.next_at if info.state == "active" else None

        return merge_upcoming(
            [info.schedule for info in infos.values()],
            self.clock.now(),
            limit=limit,
            after=after,
            until=until,
            schedule=schedule,
            start_at=start_at,
        )

    def history(self, name: str | None = None, limit: int = 50) -> builtins.list[FireRecord]:
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
