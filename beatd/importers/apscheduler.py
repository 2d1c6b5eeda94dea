"""`beatd import apscheduler DATABASE_URL [--table T]`: an APScheduler 3 SQLAlchemyJobStore.

The rows are read with SQLAlchemy and each job's state is unpickled, which
rebuilds APScheduler's own trigger objects (APScheduler must be installed:
`pip install 'beatd[import]'`). APScheduler's job store is not used: it
imports every job's function and deletes the jobs it cannot restore. The
unpickler rebuilds only what a job's state holds (APScheduler's trigger
classes, datetimes, zones, containers), so a crafted row runs no code.

- cron: every field must match (day AND day_of_week), weekdays count from
  Monday = 0; `last`, `2nd mon`, `last fri` become an rrule (calendar.py).
- interval: `every`, anchored at the job's next run time (its phase).
- date: `at`.
`coalesce` → misfire (coalesce or all), `misfire_grace_time` → grace,
`jitter` → jitter, `start_date`/`end_date` → start/end, the callable
`module:func` → the task `module.func`, a paused job (no next run time) →
disabled. APScheduler itself computes the next fires compared at DST changes.
"""

from __future__ import annotations

import copy
import io
import pickle
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from beatd.durations import format_duration
from beatd.errors import ConfigError
from beatd.importers import Batch, Entry, NextFire, Skip, instant, zone_name
from beatd.importers.calendar import AND_NOTE, Calendar, to_spec
from beatd.importers.celery import json_arguments
from beatd.importers.sources import open_database


def read(url: str, table: str, now: datetime) -> Batch:
    """Every job in the store's table, converted."""
    try:
        import apscheduler  # noqa: F401 - unpickling the jobs needs its classes
    except ImportError:
        raise ConfigError(
            "APScheduler is not installed here: pip install 'beatd[import]'"
        ) from None
    jobs = sa.table(table, sa.column("id"), sa.column("next_run_time"), sa.column("job_state"))
    with open_database(url, [table]) as conn:
        rows = conn.execute(sa.select(jobs.c.id, jobs.c.job_state).order_by(jobs.c.id)).all()
    batch = Batch(f"APScheduler job store {table!r}")
    for job_id, blob in rows:
        try:
            state = _StateUnpickler(io.BytesIO(blob)).load()
        except Exception as exc:  # unpickling may raise anything the pickled classes raise
            reason = f"cannot read its pickled state: {exc}"
            batch.skipped.append(Skip(str(job_id), reason))
            continue
        try:
            batch.entries.append(job_entry(state, now))
        except ValueError as exc:
            batch.skipped.append(Skip(str(job_id), str(exc)))
    return batch


# What an APScheduler 3 job's state holds besides its trigger classes (any class under
# apscheduler.triggers): datetimes, zones (pytz in APScheduler before 3.9), plain containers.
_ALLOWED = frozenset(
    {
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("zoneinfo", "ZoneInfo"),
        ("pytz", "_p"),
        ("pytz", "_UTC"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("collections", "OrderedDict"),
    }
)


class _StateUnpickler(pickle.Unpickler):
    """Rebuilds a job's state from what APScheduler's own state holds and nothing else.

    Any other global (a class of the user's in the job's arguments, or a crafted
    payload naming os.system) is refused, so reading a job store runs no code
    but these classes' own. Such a job is skipped with the reason.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _zone_getattr  # ZoneInfo pickles itself as getattr(ZoneInfo, "_unpickle")
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module.startswith("apscheduler.triggers.") or module == "apscheduler.triggers":
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not part of an APScheduler job's state")


def _zone_getattr(owner: object, name: str) -> Any:
    if owner is ZoneInfo and name == "_unpickle":
        return ZoneInfo._unpickle  # type: ignore[attr-defined]
    raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not part of a job's state")


def job_entry(state: dict[str, Any], now: datetime) -> Entry:
    """One job's unpickled state as a beatd schedule."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    trigger = state["trigger"]
    zone = getattr(trigger, "timezone", None)
    table: dict[str, Any] = {}
    notes: list[str] = []
    source_next: NextFire | None = None
    next_run = state.get("next_run_time")
    if isinstance(trigger, CronTrigger):
        kind, spec = to_spec(cron_calendar(trigger))
        table[kind] = spec
        source_next = trigger_next(trigger)
        if kind == "rrule":
            notes.append(AND_NOTE)
    elif isinstance(trigger, IntervalTrigger):
        table["every"] = format_duration(_whole(trigger.interval))
        phase = next_run if next_run is not None and not trigger.jitter else trigger.start_date
        table["anchor"] = instant(phase)
    elif isinstance(trigger, DateTrigger):
        table["at"] = instant(trigger.run_date)
        zone = trigger.run_date.tzinfo
    else:
        raise ValueError(f"unsupported trigger {trigger!s} ({type(trigger).__name__})")
    table["task"] = str(state["func"]).replace(":", ".")
    key = zone_name(zone)
    if key is None:
        raise ValueError(f"time zone {zone!r} has no IANA name")
    table["timezone"] = key
    if not isinstance(trigger, DateTrigger):
        table.update(_bounds(trigger, next_run, now))
    table.update(json_arguments(state.get("args"), state.get("kwargs")))
    table["misfire"] = "coalesce" if state.get("coalesce", True) else "all"
    grace = state.get("misfire_grace_time")
    if grace is not None:
        table["grace"] = format_duration(timedelta(seconds=max(1, round(grace))))
    if getattr(trigger, "jitter", None):
        table["jitter"] = format_duration(timedelta(seconds=round(trigger.jitter)))
    origin = f"job {state['id']!r} ({state.get('name')!r}): {state['func']}, {trigger!s}"
    disabled = "paused in APScheduler (no next run time)" if next_run is None else None
    return Entry(str(state["id"]), table, origin, tuple(notes), disabled, source_next)


def _whole(delta: timedelta) -> timedelta:
    if delta.total_seconds() < 1 or delta % timedelta(seconds=1):
        raise ValueError(f"interval {delta}: beatd's schedules are whole seconds, 1 s or more")
    return delta


def _bounds(trigger: Any, next_run: datetime | None, now: datetime) -> dict[str, Any]:
    """start and end. A job moved to a later next run time than its trigger's own next fire
    starts there, so the first fire after the cutover is the one APScheduler would run."""
    bounds: dict[str, Any] = {}
    start = trigger.start_date if trigger.start_date and trigger.start_date > now else None
    if next_run is not None and next_run > now and not trigger.jitter:
        natural = trigger.get_next_fire_time(None, now)
        if natural is None or next_run - natural >= timedelta(seconds=1):
            start = next_run if start is None else max(start, next_run)
    if start is not None:
        bounds["start"] = instant(start)
    if trigger.end_date is not None:
        bounds["end"] = instant(trigger.end_date)
    return bounds


def cron_calendar(trigger: Any) -> Calendar:
    """A CronTrigger's fields as value sets; weekdays from APScheduler's Monday = 0."""
    from apscheduler.triggers.cron.expressions import (
        LastDayOfMonthExpression,
        RangeExpression,
        WeekdayPositionExpression,
    )
    from apscheduler.triggers.cron.fields import MAX_VALUES, MIN_VALUES

    sets: dict[str, set[int]] = {}
    nth: set[tuple[int, int]] = set()
    for field in trigger.fields:
        values = sets.setdefault(field.name, set())
        low, high = MIN_VALUES[field.name], MAX_VALUES[field.name]
        for expr in field.expressions:
            if isinstance(expr, LastDayOfMonthExpression):
                values.add(-1)
            elif isinstance(expr, WeekdayPositionExpression):
                n = -1 if expr.option_num == 5 else expr.option_num + 1
                nth.add((n, (expr.weekday + 1) % 7))
            else:
                first = max(low, expr.first) if isinstance(expr, RangeExpression) else low
                last = expr.last if isinstance(expr, RangeExpression) else None
                values.update(range(first, (high if last is None else last) + 1, expr.step or 1))
        if field.name in ("year", "week") and not field.is_default:
            raise ValueError(f"the cron field {field.name}={field!s} has no beatd equivalent")
    if nth and (sets["day"] or sets["day_of_week"] != set(range(7))):
        raise ValueError("a weekday position ('2nd mon') with other days is not supported")
    return Calendar(
        seconds=frozenset(sets["second"]),
        minutes=frozenset(sets["minute"]),
        hours=frozenset(sets["hour"]),
        days=frozenset(sets["day"]) if not nth else frozenset(),
        months=frozenset(sets["month"]),
        weekdays=frozenset((d + 1) % 7 for d in sets["day_of_week"]),
        nth=frozenset(nth),
    )


def trigger_next(trigger: Any) -> NextFire:
    """APScheduler's own next fire after an instant (the previous fire), without jitter."""
    probe = copy.copy(trigger)
    probe.jitter = None

    def next_fire(after: datetime) -> datetime | None:
        at = after.astimezone(probe.timezone)  # as APScheduler holds its own times
        found: datetime | None = probe.get_next_fire_time(at, at)
        return found

    return next_fire
