"""Engines, transactions, the database clock and the one error boundary.

`postgresql://` URLs use psycopg 3. SQLite connections run in WAL mode and
open their transactions themselves (pysqlite's own handling is switched off,
as the SQLAlchemy docs describe), so a writing transaction starts with
`BEGIN IMMEDIATE`: it takes the write lock before it reads, which makes its
reads-then-writes (fencing checks, reconciliation) atomic across processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine

from beatd.errors import BeatdError, ConfigError, StoreError
from beatd.redact import redact

WRITE = "beatd_write"
"""Execution option: this connection's next transaction writes."""

SQLITE_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for another one (a 100,000-row load takes a few)."""

FROZEN_MS = 3000
"""Idle time after which PostgreSQL ends a transaction whose client stopped."""


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL, with PostgreSQL on psycopg 3; ConfigError if malformed."""
    try:
        parsed = sa.engine.make_url(url)
    except (exc.ArgumentError, ValueError) as error:
        raise ConfigError(
            f"invalid database URL {redact(url)!r}: {redact(str(error), url)}"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL) -> Engine:
    parsed = parse_url(url) if isinstance(url, str) else url
    kwargs: dict[str, Any] = {}
    connect = parsed
    read_only = False
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT, "check_same_thread": False}
        check_directory(parsed)
        path = sqlite_file(parsed)
        if path is not None and os.path.exists(path) and not _writable(path):
            connect, read_only = _read_only(path, parsed), True
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(connect, **kwargs)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
        raise ConfigError(
            f"unsupported database URL {redact(_raw(parsed))!r}: {redact(str(error), _raw(parsed))}"
        ) from None
    if engine.dialect.name == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        _sqlite_transactions(engine, wal=not memory and not read_only)
    elif engine.dialect.name == "postgresql":
        _end_frozen_transactions(engine)
    return engine


def sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL names; None for memory, a `file:` URI or another database."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return None if database.startswith("file:") else database


def check_directory(url: URL) -> None:
    """ConfigError when a SQLite file's directory does not exist (nothing could create it)."""
    path = sqlite_file(url)
    folder = os.path.dirname(os.path.abspath(path)) if path is not None else None
    if folder is not None and not os.path.isdir(folder):
        raise ConfigError(f"database {redact(_raw(url))}: directory {folder} does not exist")


def _writable(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_RDWR))
    except OSError:
        return False
    return True


def _read_only(path: str, url: URL) -> URL:
    """A SQLite file this process may only read, opened read-only so reading commands work.

    A WAL database is read through its `-shm` index, which a reader creates; where
    it cannot (a read-only directory and no writer running, so no `-shm`), the
    file is opened `immutable`: nobody can be changing it.
    """
    options = {"uri": "true", "mode": "ro"}
    shm = path + "-shm"
    if not os.path.exists(shm) and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        options["immutable"] = "1"
    return url.set(database="file:" + quote(os.path.abspath(path)), query=options)


def _end_frozen_transactions(engine: Engine) -> None:
    """Every session: the server ends a transaction left idle FROZEN_MS (it rolls back).

    A process frozen inside one (SIGSTOP, a paused VM) would otherwise keep its
    row locks until it wakes: the lease row (a renew or a fenced record), or
    fires it was marking sent, which the next leader must lock too. Set per
    session, not per transaction: a frozen renew waiting behind the record's
    lock became a new lock holder with no limit of its own.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = {FROZEN_MS}")
        dbapi_connection.commit()


def _sqlite_transactions(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(WRITE) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def now_expr(dialect: str) -> sa.ColumnElement[Any]:
    """The database's current time as an SQL expression (the lease time authority)."""
    if dialect == "postgresql":
        return sa.func.clock_timestamp()
    return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now")


def insert_ignore(dialect: str, table: sa.Table) -> Any:
    """INSERT that skips rows whose key exists (ON CONFLICT DO NOTHING / OR IGNORE)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


IN_CHUNK = 500  # values per IN (...) list on SQLite (its bound-parameter limit)


def in_list(column: sa.ColumnElement[Any], values: Sequence[str], dialect: str) -> Any:
    """column IN values; `= ANY(array)` on PostgreSQL, one statement for every length."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return column == sa.any_(sa.cast(list(values), postgresql.ARRAY(sa.Text())))
    return column.in_(values)


def chunks(values: Sequence[str], dialect: str) -> list[Sequence[str]]:
    """`values` cut for `in_list`: IN_CHUNK at a time on SQLite, all at once on PostgreSQL."""
    if dialect == "postgresql":
        return [values]
    return [values[start : start + IN_CHUNK] for start in range(0, len(values), IN_CHUNK)]


def db_now(conn: Connection) -> datetime:
    """Read the database clock, aware UTC."""
    return as_utc(conn.execute(sa.select(now_expr(conn.dialect.name))).scalar_one())


def as_utc(value: object) -> datetime:
    """A now_expr reading (SQLite gives text) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextlib.contextmanager
def mapped_errors(url: URL) -> Iterator[None]:
    """Turn every database library exception into a one-line StoreError."""
    try:
        yield
    except BeatdError:
        raise
    except exc.SQLAlchemyError as error:
        raise StoreError(describe(error, url)) from None
    except Exception as error:
        if type(error).__module__.split(".")[0] in ("psycopg", "sqlite3"):
            raise StoreError(describe(error, url)) from None
        raise


def describe(error: BaseException, url: URL) -> str:
    """One line naming the database (redacted) and the cause."""
    cause = getattr(error, "orig", None) or error
    text = redact(" ".join(str(cause).split()) or type(cause).__name__, _raw(url))
    if len(text) > 300:
        text = text[:297] + "..."
    return f"database {redact(_raw(url))}: {text}"


def _raw(url: URL) -> str:
    """The URL as text, password included: only ever passed through redact()."""
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def transaction(engine: Engine, url: URL, *, write: bool) -> Iterator[Connection]:
    """One transaction on a pooled connection, errors mapped, connection returned."""
    with mapped_errors(url), engine.connect() as conn:
        if write:
            conn.execution_options(**{WRITE: True})
        with conn.begin():
            yield conn
