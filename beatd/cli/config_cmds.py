"""Commands that need only the configuration: validate, upcoming."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from beatd import timing
from beatd.advice import warnings_for
from beatd.api import Beat, opened
from beatd.cli.main import EXIT_OK, add_command, warn
from beatd.cli.output import iso_local, iso_utc, print_json, print_table, relative, table_time
from beatd.config import load_settings
from beatd.errors import ConfigError, NotFound
from beatd.model import Fire

MAX_LIMIT = 100_000


def register(sub: argparse._SubParsersAction[Any]) -> None:
    add_command(
        sub,
        "validate",
        "check the configuration file: every problem (exit 2), and warnings for what is "
        "valid but likely not meant (a one-off already past, jitter longer than the period)",
        _validate,
    )

    upcoming = add_command(
        sub, "upcoming", "the next fires, merged across schedules, by instant then name", _upcoming
    )
    upcoming.add_argument(
        "--limit", metavar="N", default="10", help="how many fires to show (default 10)"
    )
    upcoming.add_argument(
        "--after",
        metavar="ISO",
        help="only fires strictly after this instant (default now; " + NAIVE + ")",
    )
    upcoming.add_argument(
        "--until", metavar="ISO", help="only fires at or before this instant (" + NAIVE + ")"
    )
    upcoming.add_argument("--schedule", metavar="NAME", help="only the schedule of this name")
    upcoming.add_argument(
        "--json",
        action="store_true",
        help='print one JSON array of {"schedule", "at" (UTC), "local"}',
    )


NAIVE = "ISO-8601; without an offset it is read in [beatd] timezone"


def _validate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    now = datetime.now(UTC)
    for schedule in settings.schedules:
        for line in warnings_for(schedule, now):
            warn(line)
    print(f"ok: {len(settings.schedules)} schedules")
    return EXIT_OK


def parse_limit(text: str) -> int:
    """--limit N: a whole number from 1 to MAX_LIMIT."""
    try:
        limit = int(text)
    except ValueError:
        raise ConfigError(f"--limit: expected a whole number, got {text!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"--limit: must be from 1 to {MAX_LIMIT}, got {limit}")
    return limit


def parse_instant(flag: str, text: str) -> datetime:
    """An ISO-8601 time from the command line, naive when it has no offset.

    The Beat reads a naive one in `[beatd] timezone` (Beat.instant).
    """
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{flag}: not an ISO-8601 time such as 2027-03-14T09:00:00Z: {text!r}"
        ) from None


def _specs(beat: Beat, names: set[str]) -> dict[str, str]:
    """The spec, in words, of each named schedule: only those, never a read of them all."""
    in_file = {s.name: s for s in beat.settings.schedules if s.name in names}
    found = {name: timing.describe(s.spec) for name, s in in_file.items()}
    for name in sorted(names - in_file.keys()):  # API schedules: one row each
        try:
            found[name] = timing.describe(beat.get(name).schedule.spec)
        except NotFound:
            continue
    return found


def _upcoming(args: argparse.Namespace) -> int:
    limit = parse_limit(args.limit)
    after = parse_instant("--after", args.after) if args.after is not None else None
    until = parse_instant("--until", args.until) if args.until is not None else None
    with opened(args.config) as beat:
        after = beat.instant(after, "--after") if after is not None else None
        until = beat.instant(until, "--until") if until is not None else None
        if after is not None and until is not None and until < after:
            raise ConfigError("--until: is before --after")
        # One "now" for the query and the labels: a slow query must not age what it found.
        now = beat.clock.now()
        fires: list[Fire] = beat.upcoming(
            limit=limit, after=now if after is None else after, until=until, schedule=args.schedule
        )
        if args.json:
            print_json(
                [
                    {"schedule": f.schedule, "at": iso_utc(f.at), "local": iso_local(f.local)}
                    for f in fires
                ]
            )
            return EXIT_OK
        specs = _specs(beat, {f.schedule for f in fires})
    if not fires:
        print("no upcoming fires")
        return EXIT_OK
    print_table(
        ("schedule", "local", "utc", "when", "spec"),
        [
            (
                f.schedule,
                table_time(f.local),
                table_time(f.at.astimezone(UTC)),
                relative(f.at, now),
                specs.get(f.schedule, "-"),
            )
            for f in fires
        ],
    )
    return EXIT_OK
