"""Commands that change or read schedules in the database: add, remove, pause,
resume, trigger, backfill, list, history. Thin over beatd.api.Beat."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from beatd.api import Beat, ScheduleInfo, opened
from beatd.cli.config_cmds import parse_limit
from beatd.cli.main import add_command
from beatd.cli.output import print_table
from beatd.codec import schedule_to_table
from beatd.errors import ConfigError
from beatd.model import FireRecord

# (flag, TOML key, how the value is read): every option of SPEC §2.
OPTION_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--task", "task", "text"),
    ("--anchor", "anchor", "text"),
    ("--args", "args", "json"),
    ("--kwargs", "kwargs", "json"),
    ("--queue", "queue", "text"),
    ("--exchange", "exchange", "text"),
    ("--routing-key", "routing_key", "text"),
    ("--headers", "headers", "json"),
    ("--format", "format", "text"),
    ("--timezone", "timezone", "text"),
    ("--start", "start", "text"),
    ("--end", "end", "text"),
    ("--jitter", "jitter", "text"),
    ("--expires", "expires", "text"),
    ("--misfire", "misfire", "text"),
    ("--grace", "grace", "text"),
    ("--max-fires", "max_fires", "int"),
    ("--history-limit", "history_limit", "int"),
    ("--priority", "priority", "int"),
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    add = add_command(sub, "add", "add a schedule to the database", _add)
    add.add_argument("name")
    kind = add.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cron", metavar="EXPR")
    kind.add_argument("--every", metavar="DURATION")
    kind.add_argument("--rrule", metavar="RULE")
    kind.add_argument("--at", metavar="ISO")
    for flag, _key, how in OPTION_FLAGS:
        add.add_argument(flag, metavar="JSON" if how == "json" else None)
    add.add_argument("--disabled", action="store_true", help="store it disabled")
    add.add_argument("--replace", action="store_true", help="replace a schedule of that name")

    for name, help, handler in (
        ("remove", "remove an API schedule (its history stays)", _remove),
        ("resume", "resume a paused schedule", _resume),
        ("trigger", "fire a schedule now, once", _trigger),
    ):
        add_command(sub, name, help, handler).add_argument("name")
    pause = add_command(sub, "pause", "pause a schedule (survives reloads)", _pause)
    pause.add_argument("name")
    pause.add_argument("--note", metavar="TEXT")

    backfill = add_command(sub, "backfill", "record and send missed instants", _backfill)
    backfill.add_argument("name")
    backfill.add_argument("--from", dest="start", required=True, metavar="ISO")
    backfill.add_argument("--to", dest="end", required=True, metavar="ISO")

    list_ = add_command(sub, "list", "schedules with next and last fire", _list)
    list_.add_argument("--json", action="store_true")

    history = add_command(sub, "history", "past fires, newest first", _history)
    history.add_argument("name", nargs="?")
    history.add_argument("--limit", metavar="N", default="20", help="how many (default 20)")
    history.add_argument("--json", action="store_true")


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
    for flag, key, how in OPTION_FLAGS:
        raw = getattr(args, key)
        if raw is not None:
            options[key] = read_option(flag, how, raw)
    if args.disabled:
        options["enabled"] = False
    with opened(args.config) as beat:
        schedule = beat.add(args.name, replace=args.replace, **options)
        nxt = beat.get(schedule.name).next_at
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
    print(f"triggered {args.name}: fire {fid} (sent by the leader)")
    return 0


def parse_instant(flag: str, text: str) -> datetime:
    """An ISO-8601 instant from the command line; naive means UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{flag}: not an ISO-8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _backfill(args: argparse.Namespace) -> int:
    start, end = parse_instant("--from", args.start), parse_instant("--to", args.end)
    with opened(args.config) as beat:
        count = beat.backfill(args.name, start, end)
    print(f"backfill {args.name}: {count} fires recorded (sent by the leader)")
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
    }


def _list(args: argparse.Namespace) -> int:
    with opened(args.config) as beat:
        rows = [_list_row(info) for info in beat.list()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        columns = ("name", "kind", "spec", "timezone", "next", "last", "state", "source")
        print_table(columns, [[row[c] or "-" for c in columns] for row in rows])
    return 0


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
