"""`beatd import celery MODULE:APP`: a Celery app's `beat_schedule`, read through Celery.

The app is found as `celery -A` finds it (the current directory first on
sys.path). A `crontab` is read from the value sets Celery parsed, so every
spelling it accepts (numbers, names, ranges, steps, lists) converts alike,
in the app's time zone; its day-of-month AND day-of-week meaning is kept
(calendar.py). Intervals (`timedelta`, seconds, `schedule(...)`) fire every
period from the cutover, as Celery beat does from its start; `relative`
ones from the boundary Celery rounds to. Celery itself computes the next
fires compared at DST changes (`celery_next`).
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from beatd.durations import format_duration
from beatd.errors import ConfigError
from beatd.importers import Batch, Entry, NextFire, Skip, instant, zone_name
from beatd.importers.calendar import AND_NOTE, Calendar, to_spec

OPTIONS = ("queue", "exchange", "routing_key", "priority", "expires", "headers")


def read(target: str, now: datetime) -> Batch:
    """Import the app named `target` ("proj.celery:app", "proj") and convert its beat_schedule."""
    app = _find_app(target)
    zone = app_zone(app)
    batch = Batch(f"Celery app {target} (beat_schedule, time zone {zone.key})")
    schedule = app.conf.beat_schedule or {}
    for name, entry in schedule.items():
        try:
            batch.entries.append(_entry(str(name), entry, zone, now))
        except ValueError as exc:
            batch.skipped.append(Skip(str(name), str(exc)))
    return batch


def _find_app(target: str) -> Any:
    try:
        from celery.app.utils import find_app
    except ImportError:
        raise ConfigError(
            "celery is not installed here: run beatd import in the app's environment"
        ) from None
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        app = find_app(target)
    except Exception as exc:  # the user's module may raise anything while it imports
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"cannot import the Celery app {target!r}: {type(exc).__name__}: {first}"
        ) from None
    if not hasattr(app, "conf"):
        raise ConfigError(f"{target!r} is not a Celery app")
    app.loader.import_default_modules()  # as beat does: tasks may add periodic tasks
    return app


def app_zone(app: Any) -> ZoneInfo:
    """The zone Celery evaluates crontabs in: `timezone`, else UTC (or local without enable_utc)."""
    zone = app.timezone
    key = zone_name(zone)
    if key is None:
        raise ConfigError(
            f"the app's time zone {zone!r} has no IANA name: set the app's timezone setting"
        )
    return ZoneInfo(key)


def _entry(name: str, entry: Any, zone: ZoneInfo, now: datetime) -> Entry:
    from celery.schedules import crontab, schedule, solar

    if not isinstance(entry, Mapping):
        raise ValueError(f"expected a dict with task and schedule, got {type(entry).__name__}")
    task = entry.get("task")
    if not isinstance(task, str) or not task:
        raise ValueError("has no task name")
    sched = entry.get("schedule")
    table: dict[str, Any] = {}
    notes: list[str] = []
    source_next: NextFire | None = None
    if isinstance(sched, solar):
        raise ValueError(
            f"solar schedule {sched.event!r}: beatd has no sunrise/sunset schedules "
            "(use a cron time close to it)"
        )
    if isinstance(sched, crontab):
        kind, spec = to_spec(celery_calendar(sched))
        table[kind] = spec
        source_next = celery_next(sched, zone)
        if kind == "rrule":
            notes.append(AND_NOTE)
    elif isinstance(sched, int | float | timedelta) or type(sched) is schedule:
        run_every = sched.run_every if isinstance(sched, schedule) else sched
        relative = bool(entry.get("relative") or getattr(sched, "relative", False))
        table.update(interval(run_every, relative, zone, now))
    else:
        raise ValueError(f"unsupported schedule type {type(sched).__name__}: {sched!r}")
    table["task"] = task
    table["timezone"] = zone.key
    table.update(json_arguments(entry.get("args"), entry.get("kwargs")))
    table.update(_options(entry.get("options") or {}, notes))
    origin = f"beat_schedule[{name!r}]: task {task!r}, {sched!r}"
    return Entry(name, table, origin, tuple(notes), source_next=source_next)


def celery_calendar(sched: Any) -> Calendar:
    """The value sets Celery parsed from a crontab (it holds Sunday as 0, as cron does)."""
    return Calendar(
        minutes=frozenset(sched.minute),
        hours=frozenset(sched.hour),
        days=frozenset(sched.day_of_month),
        months=frozenset(sched.month_of_year),
        weekdays=frozenset(sched.day_of_week),
    )


def celery_next(sched: Any, zone: ZoneInfo) -> NextFire:
    """Celery's own next fire of a crontab after an instant, taken as the last run and as now."""
    from celery.utils.time import remaining

    probe = copy.copy(sched)
    clock: list[datetime] = [datetime.now(UTC)]
    probe.nowfun = lambda: clock[0]

    def next_fire(after: datetime) -> datetime | None:
        clock[0] = after
        delta: timedelta = remaining(*probe.remaining_delta(after.astimezone(zone), tz=zone))
        return after.astimezone(UTC) + delta  # a real-time span: add it in UTC

    return next_fire


def interval(run_every: Any, relative: bool, zone: ZoneInfo, now: datetime) -> dict[str, Any]:
    """An interval as Celery runs it: every period from the cutover, or from the boundary
    Celery rounds a `relative` one to (its day, hour or minute, in the app's zone)."""
    period = run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
    seconds = period.total_seconds()
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(f"every {seconds:g} s: beatd's schedules are whole seconds, 1 s or more")
    start = now.astimezone(zone).replace(microsecond=0)
    if relative and period >= timedelta(days=1):
        if period % timedelta(days=1):
            raise ValueError(f"relative interval of {period} is not whole days")
        days = period // timedelta(days=1)
        first = datetime.combine(start.date() + timedelta(days=days), time(0), zone)
        return {
            "rrule": f"FREQ=DAILY;INTERVAL={days};BYHOUR=0;BYMINUTE=0;BYSECOND=0",
            "start": first.replace(tzinfo=None).isoformat(),
        }
    if relative:  # Celery rounds down to the hour, the minute or the second
        unit = 3600 if seconds >= 3600 else 60 if seconds >= 60 else 1
        start -= timedelta(seconds=(start.minute * 60 + start.second) % unit)
    return {"every": format_duration(period), "anchor": instant(start)}


def json_arguments(args: Any, kwargs: Any) -> dict[str, Any]:
    """args and kwargs as JSON values; ValueError naming what is not JSON."""
    table: dict[str, Any] = {}
    for key, value, kind in (("args", args, (list, tuple)), ("kwargs", kwargs, (dict,))):
        if value is None or (isinstance(value, kind) and not value):
            continue
        if not isinstance(value, kind):
            raise ValueError(f"{key}: expected a {kind[0].__name__}, got {type(value).__name__}")
        table[key] = json_value(key, value)
    return table


def json_value(key: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key}: not JSON ({exc}): {value!r}") from None


def _options(options: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key not in OPTIONS:
            notes.append(f"option {key}={value!r} has no beatd equivalent: left out")
            continue
        if key in ("queue", "exchange"):
            table[key] = str(getattr(value, "name", value))
        elif key == "expires":
            if isinstance(value, int | float) and not isinstance(value, bool):
                table["expires"] = format_duration(timedelta(seconds=max(1, round(value))))
            else:
                notes.append(f"expires={value!r} is not a number of seconds: left out")
        elif key == "headers":
            table["headers"] = json_value("headers", dict(value))
        else:
            table[key] = value
    return table
