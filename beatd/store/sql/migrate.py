"""Apply and check beatd's Alembic migrations programmatically; no alembic.ini needed.

The scripts live in the repository's top-level `migrations/` and ship in the
wheel as the package `beatd._migrations`. `upgrade` takes a lock first (a
PostgreSQL advisory lock; SQLite's `BEGIN IMMEDIATE`), so many instances may
run it at once against an empty database.

Only `upgrade` imports Alembic: the check every store open makes reads the
version table itself and compares it with REVISIONS, so `beatd run` starts
without loading Alembic, Mako and Pygments (about a third of its imports).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from beatd.errors import SchemaError, StoreError
from beatd.store.sql import engine as eng
from beatd.store.sql.tables import TABLE_NAMES, metadata

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATION_LOCK = 0x62656175  # serialises concurrent upgrades on PostgreSQL

REVISIONS = ("0001", "0002", "0003", "0004")
"""Every revision in migrations/versions, oldest first (a test keeps them equal)."""

VERSION_TABLE = "alembic_version"
"""Where Alembic keeps the database's revision (its default name)."""


def _location() -> str:
    try:
        import beatd._migrations as package  # type: ignore[import-not-found]

        return str(Path(package.__file__).parent)
    except ImportError:  # a source checkout that is not installed
        return str(Path(__file__).resolve().parent.parent / "migrations")


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", _location())
    return config


def head() -> str:
    """The newest revision this beatd knows."""
    return REVISIONS[-1]


def _revision(conn: Connection) -> str | None:
    """The revision in the version table, as Alembic reads it; None before the first upgrade."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:
        raise SchemaError(f"database has several schema revisions {sorted(rows)}; expected one")
    return str(rows[0]) if rows else None


def current_revision(url: str) -> str | None:
    """The database's revision, None when beatd's tables were never created."""
    parsed = eng.parse_url(url)
    engine = eng.make_engine(parsed)
    try:
        with eng.mapped_errors(parsed), engine.connect() as conn:
            return _revision(conn)
    finally:
        engine.dispose()


SQLITE_LOCKED_RETRIES = 5  # SQLite can refuse a racing first connection at once ("locked")


def upgrade(url: str) -> tuple[str | None, str]:
    """Migrate the database to head; returns (revision before, revision after).

    Several instances may start at once on one new SQLite file; switching it
    to WAL can fail immediately with "database is locked" instead of
    waiting, so that one error is retried (the upgrade is one transaction).
    """
    for attempt in range(SQLITE_LOCKED_RETRIES):
        try:
            return _upgrade(url)
        except StoreError as error:
            locked = "database is locked" in str(error) and url.startswith("sqlite")
            if not locked or attempt == SQLITE_LOCKED_RETRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _upgrade(url: str) -> tuple[str | None, str]:
    from alembic import command

    parsed = eng.parse_url(url)
    engine = eng.make_engine(parsed)
    config = _config()
    try:
        with eng.mapped_errors(parsed), engine.connect() as conn:
            conn.execution_options(**{eng.WRITE: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                before = _revision(conn)
                _reject_unknown(before)
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                after = _revision(conn)
                assert after is not None
                _check_tables(conn, after)
    finally:
        engine.dispose()
    return before, after


def _reject_unknown(revision: str | None) -> None:
    if revision is not None and revision not in REVISIONS:
        raise SchemaError(
            f"database schema revision {revision!r} is newer than this beatd knows "
            f"(its newest is {head()!r}); upgrade beatd"
        )


def check_engine(engine: Engine, url: URL) -> str:
    """Raise SchemaError unless the database is at this beatd's head revision."""
    with eng.mapped_errors(url), engine.connect() as conn:
        revision = _revision(conn)
        if revision is None:
            present = set(sa.inspect(conn).get_table_names())
            if not present.intersection(TABLE_NAMES):
                raise SchemaError("database has no beatd tables; run: beatd db upgrade")
            raise SchemaError("database has beatd tables but no revision; run: beatd db upgrade")
        _reject_unknown(revision)
        if revision != head():
            raise SchemaError(
                f"database schema is at revision {revision!r}, this beatd needs {head()!r}; "
                "run: beatd db upgrade"
            )
        _check_tables(conn, revision)
    return revision


def _check_tables(conn: Connection, revision: str) -> None:
    """SchemaError unless every table and column of the schema is there (the revision
    table says what should be, not what is: a table renamed by hand is not at head)."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    columns = inspector.get_multi_columns(filter_names=[t for t in TABLE_NAMES if t in present])
    found = {(table, c["name"]) for (_schema, table), cols in columns.items() for c in cols}
    missing = [f"table {t.name!r}" for t in metadata.sorted_tables if t.name not in present]
    missing += [
        f"column {t.name}.{c.name}"
        for t in metadata.sorted_tables
        if t.name in present
        for c in t.columns
        if (t.name, c.name) not in found
    ]
    if missing:
        raise SchemaError(
            f"database schema does not match revision {revision!r}: {', '.join(missing)} "
            "missing (renamed or dropped?); restore it, or recreate the database and "
            "run: beatd db upgrade"
        )


def check(url: str) -> str:
    """The database's revision if it is this beatd's head; else SchemaError."""
    parsed = eng.parse_url(url)
    engine = eng.make_engine(parsed)
    try:
        return check_engine(engine, parsed)
    finally:
        engine.dispose()
