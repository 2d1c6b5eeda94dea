"""Reading a source system's database: one engine, its tables checked, errors as one line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from beatd.config import check_database_url
from beatd.errors import ConfigError, StoreError
from beatd.redact import redact


@contextmanager
def open_database(url: str, tables: Iterable[str]) -> Iterator[Connection]:
    """A read connection to `url`; ConfigError for a bad URL or a missing table (exit 2),
    StoreError when the database cannot be read."""
    try:
        check_database_url(url)
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL: {exc}") from None
    shown = redact(url)
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():  # SQLAlchemy would create an empty one
            raise ConfigError(f"{shown}: no such database file")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            missing = [t for t in tables if t not in present]
            if missing:
                raise ConfigError(f"{shown}: no table {', '.join(missing)} in this database")
            yield conn
    except sa.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StoreError(
            f"{shown}: cannot read the database: {first[0] if first else exc}"
        ) from None
    finally:
        engine.dispose()
