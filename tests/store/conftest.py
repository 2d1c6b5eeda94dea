"""The `store` fixture: the same contract tests over memory, SQLite and PostgreSQL.

SQL stores are created with `beatd db upgrade`'s code path on a fresh
database per test; teardown asserts no pooled connection is left checked out.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from store_helpers import Backend, close_checked, open_sql

from beatd.clock import FakeClock
from beatd.store.base import Store
from beatd.store.memory import MemoryStore
from beatd.store.sql import SqlStore


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = FakeClock(datetime.now(UTC))
        memory = MemoryStore(clock)
        yield Backend("memory", memory, clock)
        memory.close()
        return
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    store = open_sql(url)
    yield Backend(request.param, store)
    close_checked(store)


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


@pytest.fixture
def sql_store(db_url: str) -> Iterator[SqlStore]:
    store = open_sql(db_url)
    yield store
    close_checked(store)
