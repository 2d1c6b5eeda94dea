"""Fixtures for real services: skip locally when one is missing, fail in CI.

Set BEATD_REQUIRE_SERVICES=1 (CI does) to turn a missing PostgreSQL or
RabbitMQ into a failure instead of a skip.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get("BEATD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("BEATD_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or fail under BEATD_REQUIRE_SERVICES=1) when a service is down."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("BEATD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} and BEATD_REQUIRE_SERVICES=1")
    pytest.skip(message)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """beatd.logs.setup() takes the `beatd` loggers over: hand them back to pytest after."""
    yield
    root = logging.getLogger("beatd")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.propagate = True
    root.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def pg_server() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return PG_ADMIN_URL


@contextlib.contextmanager
def fresh_pg_database(server: str, **engine_options: Any) -> Iterator[str]:
    """A new PostgreSQL database on `server`, dropped afterwards (even with sessions open)."""
    import sqlalchemy as sa

    name = f"beatd_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", **engine_options)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Callable[..., contextlib.AbstractContextManager[str]]:
    """fresh_pg_database, for conftests below this one."""
    return fresh_pg_database


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    with fresh_pg_database(pg_server) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path}/beatd.db"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def celery_python() -> str:
    """The python of Celery's own venv (tests/celery_env.py), made on first use."""
    import celery_env

    try:
        return str(celery_env.celery_python())
    except celery_env.CeleryEnvError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def import_python() -> str:
    """The python of the venv where `beatd import` meets Celery and django-celery-beat
    (tests/celery_env.py), made on first use."""
    import celery_env

    try:
        return str(celery_env.import_python())
    except celery_env.CeleryEnvError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def celery_reference(celery_python: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Ask Celery itself, in its own venv, what it builds (see tests/celery_reference.py)."""
    script = Path(__file__).resolve().parent / "celery_reference.py"

    def ask(request: dict[str, Any]) -> dict[str, Any]:
        argv = [celery_python, str(script)]
        done = subprocess.run(
            argv, input=json.dumps(request), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    return ask


@pytest.fixture(scope="session")
def amqp_server() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL
