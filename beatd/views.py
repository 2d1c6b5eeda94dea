"""What `list`, `upcoming` and the API show: the config file as it is now, merged with the store.

Pure: (the file's schedules, the stored schedules, now) -> one View per
schedule, by name. A file schedule takes its definition from the file and
its run state from the store's row of that name: pause and note, last fire,
and the next undecided instant while its timing is the one stored. It is
`reload_pending` when that row (what the running daemon loaded) is missing
or differs. Stored file schedules the file no longer lists are left out
(the next load deletes them); API schedules are shown as stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from beatd import timing
from beatd.model import FireRecord, Schedule, Source, StoredSchedule, schedule_state
from beatd.upcoming import SharedTiming

NextAfter = Callable[[Schedule, datetime], "datetime | None"]


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as `list` shows it.

    `reload_pending`: a file schedule that the running daemon has not loaded
    as the file now defines it (new, or changed since); the daemon applies it
    at its next start or reload (SIGHUP).
    """

    schedule: Schedule
    next_at: datetime | None
    last_at: datetime | None
    state: str  # active | paused | disabled | finished
    note: str | None
    reload_pending: bool = False
    last_fire: FireRecord | None = None  # its newest history row, where a page read it

    @property
    def name(self) -> str:
        return self.schedule.name

    @property
    def source(self) -> str:
        return str(self.schedule.source)


@dataclass(frozen=True, slots=True)
class View:
    info: ScheduleInfo
    decided: bool  # next_at is the store's first undecided instant: earlier ones are history


state = schedule_state


def stored_view(stored: StoredSchedule) -> View:
    s = stored.schedule
    info = ScheduleInfo(
        s, stored.next_at, stored.last_at, state(s, stored.next_at, stored.paused), stored.note
    )
    return View(info, decided=True)


def file_view(
    schedule: Schedule,
    stored: StoredSchedule | None,
    now: datetime,
    *,
    database: bool,
    next_after: NextAfter = timing.next_after,
) -> View:
    """A file schedule as the file defines it now, with the run state the store has for it.

    `database`: whether there is a database at all (without one nothing is pending).
    """
    if stored is None or stored.schedule.source is not Source.FILE:
        next_at = next_after(schedule, now)
        info = ScheduleInfo(
            schedule, next_at, None, state(schedule, next_at, False), None, database
        )
        return View(info, decided=False)
    loaded = stored.schedule == schedule
    decided = loaded or stored.schedule.timing == schedule.timing
    next_at = stored.next_at if decided else next_after(schedule, now)
    shown = state(schedule, next_at, stored.paused)
    return View(
        ScheduleInfo(schedule, next_at, stored.last_at, shown, stored.note, not loaded), decided
    )


def merged(
    in_file: Sequence[Schedule], stored: Iterable[StoredSchedule] | None, now: datetime
) -> list[View]:
    """Every schedule by name: the file's, then the store's API schedules (None: no database)."""
    rows = {s.schedule.name: s for s in stored} if stored is not None else {}
    shared = SharedTiming()  # 100,000 schedules cost their distinct timings
    views = [
        file_view(
            s,
            rows.pop(s.name, None),
            now,
            database=stored is not None,
            next_after=shared.next_after,
        )
        for s in in_file
    ]
    views.extend(stored_view(s) for s in rows.values() if s.schedule.source is Source.API)
    views.sort(key=lambda view: view.info.name)
    return views
