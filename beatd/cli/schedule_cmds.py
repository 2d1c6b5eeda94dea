"""Commands that change or read schedules in the database: add, remove, pause,
resume, trigger, list, history. Thin over beatd.api.Beat."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from beatd.advice import warnings_for
from beatd.api import Beat, opened
from beatd.cli.config_cmds import parse_limit
from beatd.cli.main import add_command, warn
from beatd.cli.output import print_table
from beatd.codec import schedule_to_table
from beatd.errors import AlreadyExists, ConfigError
from beatd.model import FireRecord, Format, Misfire
from beatd.views import ScheduleInfo

NAME = "the schedule's name"
DURATION = "a duration: 90s, 5m, 1h30m, 2d or a number of seconds"
INSTANT = "ISO-8601; without an offset it is read in the schedule's --timezone"

# (flag, TOML key, how the value is read, help): every option of SPEC §2.
OPTION_FLAGS: tuple[tuple[str, str, str, str], ...] = (
    ("--task", "task", "text", "the task name a worker runs (required)"),
    ("--anchor", "anchor", "instant", f"--every's phase: fires at anchor + k * period ({INSTANT})"),
    ("--args", "args", "json", "positional arguments, a JSON array"),
    ("--kwargs", "kwargs", "json", "keyword arguments, a JSON object"),
    ("--queue", "queue", "text", "queue (default celery; also the routing key unless set)"),
    ("--exchange", "exchange", "text", 'exchange (default "": the default exchange)'),
    ("--routing-key", "routing_key", "text", "routing key (default: the queue)"),
    ("--headers", "headers", "json", "extra message headers, a JSON object"),
    ("--format", "format", "text", "message format (default [beatd] format)"),
    ("--timezone", "timezone", "text", "IANA zone of cron, rrule and naive instants"),
    ("--start", "start", "instant", f"no fire before this ({INSTANT})"),
    ("--end", "end", "instant", f"no fire after this ({INSTANT})"),
    (
        "--jitter",
        "jitter",
        "duration",
        f"delay each publish by a stable random part of it; {DURATION}",
    ),
    (
        "--expires",
        "expires",
        "duration",
        f"a message not sent this long after its instant expires; {DURATION}",
    ),
    (
        "--misfire",
        "misfire",
        "text",
        "after missed instants send: coalesce (default) one fire for the latest, all of them "
        "(at most 1000), or skip them",
    ),
    ("--grace", "grace", "duration", f"drop missed instants older than this; {DURATION}"),
    ("--max-fires", "max_fires", "int", "stop after this many fires"),
    ("--history-limit", "history_limit", "int", "keep at most this many history rows of it"),
    ("--priority", "priority", "int", "AMQP message priority, 0-255"),
)
OPTION_CHOICES = {
    "format": tuple(str(f) for f in Format),
    "misfire": tuple(str(m) for m in Misfire),
}
_METAVARS = {"json": "JSON", "int": "N", "instant": "ISO", "duration": "DURATION"}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    add = add_command(sub, "add", "add a schedule to the database (--replace to change one)", _add)
    add.add_argument("name", help=NAME)
    kind = add.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cron", metavar="EXPR", help='cron expression, e.g. "*/5 9-17 * * MON-FRI"')
    kind.add_argument("--every", metavar="DURATION", help=f"a fixed period; {DURATION}")
    kind.add_argument("--rrule", metavar="RULE", help='RFC 5545 rule, e.g. "FREQ=WEEKLY;BYDAY=MO"')
    kind.add_argument("--at", metavar="ISO", help=f"one fire at this instant ({INSTANT})")
    for flag, key, how, help in OPTION_FLAGS:
        add.add_argument(
            flag,
            metavar=_METAVARS.get(how, "ZONE" if key == "timezone" else None),
            choices=OPTION_CHOICES.get(key),
            required=key == "task",
            help=help,
        )
    add.add_argument("--disabled", action="store_true", help="store it disabled")
    add.add_argument("--replace", action="store_true", help="replace a schedule of that name")

    for name, help, handler in (
        ("remove", "remove an API schedule (its history stays)", _remove),
        ("resume", "resume a paused schedule", _resume),
        ("trigger", "fire a schedule now, once", _trigger),
    ):
        add_command(sub, name, help, handler).add_argument("name", help=NAME)
    pause = add_command(sub, "pause", "pause a schedule (survives reloads)", _pause)
    pause.add_argument("name", help=NAME)
    pause.add_argument("--note", metavar="TEXT", help="why, shown by list")

    list_ = add_command(sub, "list", "schedules with next and last fire", _list)
    list_.add_argument(
        "--json",
        action="store_true",
        help="print one JSON array (name, kind, spec, timezone, task, next, last, state, note, "
        "source, reload_pending)",
    )

    history = add_command(sub, "history", "past fires, newest first", _history)
    history.add_argument("name", nargs="?", help="only this schedule's fires")
    history.add_argument("--limit", metavar="N", default="20", help="how many (default 20)")
    history.add_argument(
        "--json",
        action="store_true",
        help="print one JSON array (schedule, scheduled_for, fire_id, outcome, reason, sent_at, "
        "manual)",
    )


def read_option(flag: str, how: str, raw: str) -> Any:
    if how == "json":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{flag}: not valid JSON: {exc.msg} at column {exc.colno}") from None
        except RecursionError:
            raise ConfigError(f"{flag}: JSON nested too deeply") from None
    if how == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{flag}: expected a whole number, got {raw!r}") from None
    return raw


def _add(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {
        key: getattr(args, key) for key in ("cron", "every", "rrule", "at") if getattr(args, key)
    }
    for flag, key, how, _help in OPTION_FLAGS:
        raw = getattr(args, key)
        if raw is not None:
            options[key] = read_option(flag, how, raw)
    if args.disabled:
        options["enabled"] = False
    with opened(args.config) as beat:
        try:
            schedule = beat.add(args.name, replace=args.replace, **options)
        except AlreadyExists:
            raise AlreadyExists(
                f"schedule {args.name!r} already exists; add --replace to change it"
            ) from None
        nxt = beat.get(schedule.name).next_at
        for line in warnings_for(schedule, beat.clock.now()):
            warn(line)
    print(f"{'replaced' if args.replace else 'added'} {schedule.name}: next {_when(nxt)}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with opened(args.config) as beat:
        beat.remove(args.name)
    print(f"removed {args.name}")
    return 0


def _pause(args: argparse.Namespace) -> int:
    with opened(args.config) as beat:
        beat.pause(args.name, note=args.note)
    print(f"paused {args.name}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    with opened(args.config) as beat:
        beat.resume(args.name)
        nxt = beat.get(args.name).next_at
    print(f"resumed {args.name}: next {_when(nxt)}")
    return 0


def _trigger(args: argparse.Namespace) -> int:
    with opened(args.config) as beat:
        fid = beat.trigger(args.name)
    print(f"triggered {args.name}: fire {fid} (recorded; the running daemon sends it)")
    return 0


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else "-"


def _list_row(info: ScheduleInfo) -> dict[str, Any]:
    s = info.schedule
    return {
        "name": s.name,
        "kind": s.kind,
        "spec": str(schedule_to_table(s)[s.kind]),
        "timezone": s.timezone.key,
        "task": s.task,
        "next": _when(info.next_at) if info.next_at else None,
        "last": _when(info.last_at) if info.last_at else None,
        "state": info.state,
        "note": info.note,
        "source": info.source,
        "reload_pending": info.reload_pending,
    }


def _list(args: argparse.Namespace) -> int:
    with opened(args.config) as beat:
        rows = [_list_row(info) for info in beat.list()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        columns = ("name", "kind", "spec", "timezone", "next", "last", "state", "source")
        print_table(columns, [[_list_cell(row, c) for c in columns] for row in rows])
    return 0


def _list_cell(row: dict[str, Any], column: str) -> str:
    if column == "source" and row["reload_pending"]:
        return f"{row['source']} (reload pending)"
    return str(row[column] or "-")


def _history_row(record: FireRecord) -> dict[str, Any]:
    return {
        "schedule": record.schedule,
        "scheduled_for": _when(record.scheduled_for),
        "fire_id": record.fire_id,
        "outcome": "manual" if record.manual and record.outcome == "sent" else record.outcome,
        "reason": record.reason,
        "sent_at": _when(record.sent_at) if record.sent_at else None,
        "manual": record.manual,
    }


def _history(args: argparse.Namespace) -> int:
    beat: Beat
    with opened(args.config) as beat:
        rows = [_history_row(r) for r in beat.history(args.name, parse_limit(args.limit))]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        columns = ("schedule", "scheduled_for", "outcome", "sent_at", "fire_id", "reason")
        print_table(columns, [[row[c] or "-" for c in columns] for row in rows])
    return 0
