"""Stores: `open_store(url)` picks the memory twin or the SQL store by URL.

    memory://            MemoryStore (tests, demos; nothing survives the process)
    sqlite:///path.db    SqlStore on SQLite (WAL)
    postgresql://...     SqlStore on PostgreSQL through psycopg 3

The SQL store checks the schema revision when opened (SchemaError: run
`beatd db upgrade`); `open_or_create(url)` first creates beatd's tables in
an empty database, as `beatd run` and the API's changes do. `has_tables(url)`
tells the CLI whether to read the database at all, without creating a
SQLite file.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from beatd.errors import ConfigError
from beatd.model import Advance, Decision, Schedule, StoredSchedule
from beatd.store.base import NextAt, ReconcileResult, Store

__all__ = [
    "Advance",
    "Decision",
    "NextAt",
    "ReconcileResult",
    "Store",
    "StoredSchedule",
    "check_unique",
    "has_tables",
    "open_or_create",
    "open_store",
]

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

MEMORY = "memory://"


def open_store(url: str) -> Store:
    """Open the store at `url`; ConfigError (bad URL), StoreError or SchemaError."""
    if url.strip() == MEMORY or url.startswith(MEMORY):
        from beatd.store.memory import MemoryStore

        return MemoryStore()
    from beatd.errors import SchemaError
    from beatd.store.sql import SqlStore
    from beatd.store.sql.engine import check_directory, parse_url

    parsed = parse_url(url)
    if not _sqlite_file_exists(parsed):
        check_directory(parsed)  # a missing directory is not a missing upgrade
        raise SchemaError("database has no beatd tables; run: beatd db upgrade")
    return SqlStore(parsed)


def open_or_create(url: str) -> Store:
    """Open the store; an empty database first gets beatd's tables.

    An older schema still needs `db upgrade`. The tables are looked for only
    when opening fails, so a normal open connects once, not twice. Safe
    when several processes open at once: the upgrade takes a lock.
    """
    from beatd.errors import SchemaError

    try:
        return open_store(url)
    except SchemaError:
        if url.startswith(MEMORY) or has_tables(url):
            raise
    from beatd.redact import redact
    from beatd.store.sql import migrate

    _before, after = migrate.upgrade(url)
    logging.getLogger("beatd").info(
        "created beatd's tables", extra={"database": redact(url), "revision": after}
    )
    return open_store(url)


def has_tables(url: str) -> bool:
    """True when the database at `url` holds beatd's tables (memory:// always does).

    A SQLite file that does not exist is not created. An unreachable server
    raises StoreError: the caller should not silently fall back to the file.
    """
    if url.startswith(MEMORY):
        return True
    import sqlalchemy as sa

    from beatd.store.sql import engine as eng
    from beatd.store.sql.tables import schedules

    parsed = eng.parse_url(url)
    if not _sqlite_file_exists(parsed):
        return False
    engine = eng.make_engine(parsed)
    try:
        with eng.mapped_errors(parsed), engine.connect() as conn:
            return bool(sa.inspect(conn).has_table(schedules.name))
    finally:
        engine.dispose()


def check_unique(schedules: Sequence[Schedule]) -> None:
    """ConfigError if a name is listed twice: the file cannot own one name twice."""
    twice = sorted(name for name, n in Counter(s.name for s in schedules).items() if n > 1)
    if twice:
        raise ConfigError(f"schedule names listed more than once: {', '.join(twice)}")


def _sqlite_file_exists(url: URL) -> bool:
    """False for a SQLite file that does not exist (True for any other database)."""
    from beatd.store.sql.engine import sqlite_file

    path = sqlite_file(url)
    return path is None or os.path.exists(path)
