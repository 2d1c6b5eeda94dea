"""`beatd db upgrade` and `beatd db current`: the schema, through Alembic."""

from __future__ import annotations

import argparse
from typing import Any

from beatd.cli.main import EXIT_OK, add_command
from beatd.config import load_settings
from beatd.redact import redact
from beatd.store.sql import migrate


def register(sub: argparse._SubParsersAction[Any]) -> None:
    db = add_command(sub, "db", "database schema commands", _missing)
    commands: Any = db.add_subparsers(dest="db_command", metavar="COMMAND", parser_class=type(db))
    commands.required = True
    add_command(commands, "upgrade", "apply beatd's migrations to the database", _upgrade)
    add_command(commands, "current", "print the database's schema revision", _current)


def _missing(args: argparse.Namespace) -> int:  # pragma: no cover - subcommand is required
    return EXIT_OK


def _database(args: argparse.Namespace) -> str:
    return load_settings(getattr(args, "config", None)).database


def _upgrade(args: argparse.Namespace) -> int:
    url = _database(args)
    before, after = migrate.upgrade(url)
    where = redact(url)
    if before == after:
        print(f"{where}: schema is up to date at revision {after}")
    else:
        print(f"{where}: schema upgraded from revision {before or '(empty)'} to {after}")
    return EXIT_OK


def _current(args: argparse.Namespace) -> int:
    url = _database(args)
    revision = migrate.current_revision(url)
    print(f"{redact(url)}: revision {revision or '(none)'} (this beatd: {migrate.head()})")
    return EXIT_OK
