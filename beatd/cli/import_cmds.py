"""`beatd import celery|django-celery-beat|apscheduler`: come over in one command (SPEC §8).

Writes `[schedules.NAME]` tables to stdout or --out FILE, or with
--to-database adds API schedules through beatd.api.Beat. Each schedule that
could not be converted is named on stderr with the reason, the others are
still written; notes (renamed, DST differences) go to stderr and into the
TOML comments. Exit 0 when all converted, 1 when some were skipped, 2 for
bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from beatd.api import opened
from beatd.cli.main import EXIT_FAILURE, EXIT_OK, add_command, one_line
from beatd.errors import ConfigError, Conflict
from beatd.importers import Batch, Imported, Skip, finish, toml_out

_EPILOG = (
    "Exit codes: 0 all converted, 1 some skipped (each named on stderr with the reason; "
    "the others are still written), 2 bad usage. Nothing from the past fires at the "
    "cutover. With --to-database the database is the config's (or $BEATD_DATABASE)."
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    group = add_command(
        sub, "import", "convert schedules from Celery beat, django-celery-beat or APScheduler 3",
        _no_source,
    )  # fmt: skip
    sources = group.add_subparsers(dest="source", metavar="SOURCE", parser_class=type(group))
    sources.required = True

    celery = _source(sources, "celery", "a Celery app's beat_schedule (run where the app imports)")
    celery.add_argument("app", metavar="MODULE:APP", help="the app, as for celery -A")
    celery.set_defaults(read=_read_celery)

    dcb = _source(sources, "django-celery-beat", "django-celery-beat's tables (no Django needed)")
    dcb.add_argument("url", metavar="DATABASE_URL", help="SQLAlchemy URL of the Django database")
    dcb.set_defaults(read=_read_django)

    aps = _source(sources, "apscheduler", "an APScheduler 3 SQLAlchemyJobStore")
    aps.add_argument("url", metavar="DATABASE_URL", help="SQLAlchemy URL of the job store")
    aps.add_argument(
        "--table", default="apscheduler_jobs", help="the job store's table (default %(default)s)"
    )
    aps.set_defaults(read=_read_apscheduler)


def _source(sources: argparse._SubParsersAction[Any], name: str, help: str) -> Any:
    parser = add_command(sources, name, help, _import)
    parser.epilog = f"{_EPILOG}\n\n{parser.epilog or ''}"  # before the environment and exit codes
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="FILE", help="write the TOML tables to FILE, not stdout")
    where.add_argument(
        "--to-database", action="store_true", help="add them as API schedules instead of TOML"
    )
    parser.add_argument(
        "--replace", action="store_true", help="with --to-database: replace schedules of that name"
    )
    return parser


def _no_source(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires one
    raise ConfigError("import: choose a source: celery, django-celery-beat or apscheduler")


def _read_celery(args: argparse.Namespace, now: datetime) -> Batch:
    from beatd.importers import celery

    return celery.read(args.app, now)


def _read_django(args: argparse.Namespace, now: datetime) -> Batch:
    from beatd.importers import django_celery_beat

    return django_celery_beat.read(args.url, now)


def _read_apscheduler(args: argparse.Namespace, now: datetime) -> Batch:
    from beatd.importers import apscheduler

    return apscheduler.read(args.url, args.table, now)


def _import(args: argparse.Namespace) -> int:
    if args.replace and not args.to_database:
        raise ConfigError("import: --replace only applies with --to-database")
    now = datetime.now(UTC).replace(microsecond=0)
    read: Callable[[argparse.Namespace, datetime], Batch] = args.read
    batch = read(args, now)
    imported, skipped = finish(batch, now)
    if args.to_database:
        written = _to_database(args, imported, skipped)
    else:
        written = _to_toml(args, batch.source, imported, skipped)
    for item in written:
        for note in item.entry.notes:
            _say(f"note: {item.entry.name}: {note}")
    for skip in skipped:
        _say(f"skipped {skip.name!r}: {skip.reason}")
    where = "database" if args.to_database else (args.out or "stdout")
    _say(
        f"imported {len(written)} schedules from {batch.source} to {where}; {len(skipped)} skipped"
    )
    return EXIT_FAILURE if skipped else EXIT_OK


def _say(text: str) -> None:
    print(f"beatd: {one_line(text)}", file=sys.stderr)


def _to_toml(
    args: argparse.Namespace, source: str, imported: list[Imported], skipped: list[Skip]
) -> list[Imported]:
    tables: list[str] = []
    written: list[Imported] = []
    for item in imported:
        try:
            tables.append(toml_out.table(item))
        except ValueError as exc:
            skipped.append(Skip(item.entry.name, str(exc)))
            continue
        written.append(item)
    text = toml_out.document(f"beatd schedules imported from {source}", tables)
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--out: cannot write {args.out}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    return written


def _to_database(
    args: argparse.Namespace, imported: list[Imported], skipped: list[Skip]
) -> list[Imported]:
    written: list[Imported] = []
    with opened(getattr(args, "config", None)) as beat:
        for item in imported:
            name, table, disabled = item.entry.name, dict(item.entry.table), item.entry.disabled
            try:
                if (
                    disabled
                ):  # stored disabled, paused with the reason, then enabled: resume runs it
                    beat.add(name, replace=args.replace, enabled=False, **table)
                    beat.pause(name, note=f"imported disabled: {disabled}")
                    beat.add(name, replace=True, **table)
                else:
                    beat.add(name, replace=args.replace, **table)
            except Conflict as exc:
                reason = str(exc)
                if "already exists" in reason:
                    reason = "a schedule of that name exists (use --replace to replace it)"
                skipped.append(Skip(name, reason))
                continue
            written.append(item)
    return written
