"""Fixtures of the fault suite: a cluster on a fresh database and a recording consumer.

Run it alone with `pytest -m faults tests/faults`; BEATD_LONG=1 lengthens the
outages and the number of kills; BEATD_FAULTS_REPORT=path appends each
scenario's accounting as a JSON line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from faults_support import FaultCluster


@pytest.fixture
def cluster(pg_url: str, amqp_server: str, tmp_path: Path) -> Iterator[FaultCluster]:
    c = FaultCluster(pg_url, amqp_server, tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def empty_cluster(pg_url: str, amqp_server: str, tmp_path: Path) -> Iterator[FaultCluster]:
    """A cluster whose database has no tables yet (nobody ran `beatd db upgrade`)."""
    c = FaultCluster(pg_url, amqp_server, tmp_path, migrate=False)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def restart_url(
    pg_server: str, pg_database: Callable[..., AbstractContextManager[str]]
) -> Iterator[str]:
    """Like pg_url, but its admin connections are not pooled: they outlive a server restart."""
    import sqlalchemy as sa

    with pg_database(pg_server, poolclass=sa.pool.NullPool) as url:
        yield url


@pytest.fixture
def restart_cluster(restart_url: str, amqp_server: str, tmp_path: Path) -> Iterator[FaultCluster]:
    c = FaultCluster(restart_url, amqp_server, tmp_path)
    try:
        yield c
    finally:
        c.close()
