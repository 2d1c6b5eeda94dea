"""`beatd import django-celery-beat DATABASE_URL`: its tables, read with SQLAlchemy alone.

No Django is needed. Per periodic task:
- crontab: Celery's field syntax read as Celery reads it (calendar.py), in the
  crontab's own time zone; day of month AND day of week, as Celery means it.
- interval: `every`, anchored at `last_run_at` (else `start_time`, else when
  the task was last changed), so the next fire is the one Celery would send.
- clocked: `at`; solar: skipped with the reason.
- `enabled` false: disabled; `one_off`: one fire (max_fires = 1); `start_time`
  → start; `expires` (an instant: the schedule stops) → end; `expire_seconds`
  (the message's time to live) → expires; queue, exchange, routing key,
  priority, headers (plus the `periodic_task_name` header it sends), args and
  kwargs as JSON.
Naive times (SQLite) are UTC, as Django stores them with USE_TZ. When Celery
is installed, its crontab computes the next fires compared at DST changes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from beatd.codec import parse_zone
from beatd.durations import format_duration
from beatd.importers import Batch, Entry, NextFire, Skip, instant
from beatd.importers.calendar import (
    AND_NOTE,
    DAYS,
    HOURS,
    MINUTES,
    MONTHS,
    WEEKDAYS,
    Calendar,
    parse_celery_field,
    to_spec,
)
from beatd.importers.celery import json_value
from beatd.importers.sources import open_database

PREFIX = "django_celery_beat_"
_TIME = sa.DateTime(timezone=True)

TASKS = sa.table(
    f"{PREFIX}periodictask",
    *(sa.column(c) for c in ("id", "name", "task", "args", "kwargs", "queue", "exchange")),
    *(sa.column(c) for c in ("routing_key", "headers", "priority", "expire_seconds")),
    *(sa.column(c) for c in ("interval_id", "crontab_id", "solar_id", "clocked_id")),
    sa.column("enabled", sa.Boolean),
    sa.column("one_off", sa.Boolean),
    sa.column("total_run_count", sa.Integer),
    *(sa.column(c, _TIME) for c in ("start_time", "expires", "last_run_at", "date_changed")),
)
CRONTABS = sa.table(
    f"{PREFIX}crontabschedule",
    *(sa.column(c) for c in ("id", "minute", "hour", "day_of_week", "day_of_month")),
    sa.column("month_of_year"),
    sa.column("timezone"),
)
INTERVALS = sa.table(
    f"{PREFIX}intervalschedule", sa.column("id"), sa.column("every"), sa.column("period")
)
CLOCKED = sa.table(f"{PREFIX}clockedschedule", sa.column("id"), sa.column("clocked_time", _TIME))
SOLAR = sa.table(f"{PREFIX}solarschedule", sa.column("id"), sa.column("event"))
_TABLES = (TASKS, CRONTABS, INTERVALS, CLOCKED, SOLAR)


def read(url: str, now: datetime) -> Batch:
    """Every periodic task in the database at `url`, converted."""
    with open_database(url, [t.name for t in _TABLES]) as conn:
        tasks = conn.execute(sa.select(TASKS).order_by(TASKS.c.name)).mappings().all()
        by_id = {
            t.name: {row["id"]: row for row in conn.execute(sa.select(t)).mappings()}
            for t in _TABLES[1:]
        }
    batch = Batch("django-celery-beat")
    for task in tasks:
        try:
            batch.entries.append(_entry(task, by_id, now))
        except ValueError as exc:
            batch.skipped.append(Skip(str(task["name"]), str(exc)))
    return batch


def _entry(task: Any, by_id: dict[str, dict[Any, Any]], now: datetime) -> Entry:
    table: dict[str, Any] = {}
    notes: list[str] = []
    source_next: NextFire | None = None
    zone = "UTC"
    if task["crontab_id"] is not None:
        row = by_id[CRONTABS.name][task["crontab_id"]]
        zone = str(row["timezone"] or "UTC")
        kind, spec = to_spec(crontab_calendar(row))
        table[kind] = spec
        source_next = _celery_next(row, parse_zone(zone))
        what = f"crontab {_crontab_text(row)} {zone}"
        if kind == "rrule":
            notes.append(AND_NOTE)
    elif task["interval_id"] is not None:
        row = by_id[INTERVALS.name][task["interval_id"]]
        period = timedelta(**{str(row["period"]): int(row["every"])})
        if period.total_seconds() < 1 or period % timedelta(seconds=1):
            raise ValueError(f"every {period}: beatd's schedules are whole seconds, 1 s or more")
        phase = task["last_run_at"] or task["start_time"] or task["date_changed"] or now
        table["every"] = format_duration(period)
        table["anchor"] = instant(_utc(phase))
        what = f"every {row['every']} {row['period']}"
    elif task["clocked_id"] is not None:
        at = _utc(by_id[CLOCKED.name][task["clocked_id"]]["clocked_time"])
        table["at"] = instant(at)
        what = f"clocked {instant(at)}"
    elif task["solar_id"] is not None:
        event = by_id[SOLAR.name][task["solar_id"]]["event"]
        raise ValueError(
            f"solar schedule {event!r}: beatd has no sunrise/sunset schedules "
            "(use a cron time close to it)"
        )
    else:
        raise ValueError("has no schedule (crontab, interval, clocked or solar)")
    table["task"] = str(task["task"])
    table["timezone"] = zone
    table.update(_options(task, now))
    if task["expires"] is not None:
        notes.append("expires (the instant it stops) is the schedule's end")
    disabled = None if task["enabled"] else "disabled in django-celery-beat"
    if task["one_off"] and task["total_run_count"]:
        raise ValueError("one-off task that already ran")
    origin = f"periodic task {task['name']!r}: {task['task']}, {what}"
    return Entry(str(task["name"]), table, origin, tuple(notes), disabled, source_next)


def _options(task: Any, now: datetime) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for key in ("args", "kwargs"):
        text = task[key]
        if text and text.strip() not in ("[]", "{}"):
            table[key] = _json(key, text)
    for key in ("queue", "exchange", "routing_key"):
        if task[key]:
            table[key] = str(task[key])
    if task["priority"] is not None:
        table["priority"] = int(task["priority"])
    headers = _json("headers", task["headers"]) if task["headers"] else {}
    if not isinstance(headers, dict):
        raise ValueError(f"headers: expected a JSON object, got {task['headers']!r}")
    table["headers"] = {**headers, "periodic_task_name": str(task["name"])}
    if task["one_off"]:
        table["max_fires"] = 1
    if task["start_time"] is not None and _utc(task["start_time"]) > now:
        table["start"] = instant(_utc(task["start_time"]))
    if task["expires"] is not None:
        table["end"] = instant(_utc(task["expires"]))
    if task["expire_seconds"]:
        table["expires"] = format_duration(timedelta(seconds=int(task["expire_seconds"])))
    return table


def _json(key: str, text: str) -> Any:
    try:
        return json_value(key, json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key}: not JSON ({exc.msg}): {text!r}") from None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_FIELDS = (
    ("minute", MINUTES),
    ("hour", HOURS),
    ("day_of_month", DAYS),
    ("month_of_year", MONTHS),
    ("day_of_week", WEEKDAYS),
)


def _crontab_text(row: Any) -> str:
    return " ".join(str(row[name] or "*").replace(" ", "") for name, _ in _FIELDS)


def crontab_calendar(row: Any) -> Calendar:
    """A crontab row's five fields, read as Celery reads them."""
    sets = {}
    for name, domain in _FIELDS:
        try:
            sets[name] = parse_celery_field(str(row[name] or "*"), domain)
        except ValueError as exc:
            raise ValueError(f"crontab {name}: {exc}") from None
    return Calendar(
        minutes=sets["minute"],
        hours=sets["hour"],
        days=sets["day_of_month"],
        months=sets["month_of_year"],
        weekdays=sets["day_of_week"],
    )


def _celery_next(row: Any, zone: ZoneInfo) -> NextFire | None:
    """Celery's crontab for the row (as django-celery-beat builds it), when Celery is here."""
    try:
        from celery.schedules import crontab
    except ImportError:
        return None
    from beatd.importers.celery import celery_next

    fields = {name: str(row[name] or "*") for name, _ in _FIELDS}
    return celery_next(crontab(**fields), zone)
