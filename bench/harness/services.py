"""PostgreSQL databases and RabbitMQ queues made for one run and removed afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import psycopg

PG_ADMIN_URL = os.environ.get(
    "BEATD_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("BEATD_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
HEADER = "beatd-scheduled-for"


def conninfo(sqlalchemy_url: str) -> str:
    """A libpq URL from a SQLAlchemy one (drops the +driver part)."""
    scheme, rest = sqlalchemy_url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else sqlalchemy_url


def database_url(admin_url: str, name: str) -> str:
    """The SQLAlchemy URL of database `name` on the server of `admin_url`."""
    base = admin_url.split("?", 1)[0].rsplit("/", 1)[0]
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base.removeprefix("postgresql://")
    return f"{base}/{name}"


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """Create a database, yield its SQLAlchemy URL, drop it (even from under open sessions)."""
    name = f"beatd_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(admin_url, name)
    finally:
        with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_pids(admin_url: str, db_url: str) -> list[int]:
    """PostgreSQL backend processes connected to the database of `db_url`."""
    name = db_url.split("?", 1)[0].rsplit("/", 1)[1]
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchall()
    return [int(row[0]) for row in rows]


def new_queue_name(prefix: str = "bench") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextmanager
def fresh_queues(amqp_url: str, count: int = 2) -> Iterator[list[str]]:
    """Names for `count` durable queues (declared by the consumer); deleted afterwards.

    Also deletes an exchange of the same name, which Celery declares per queue.
    """
    names = [new_queue_name() for _ in range(count)]
    try:
        yield names
    finally:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            for name in names:
                channel = conn.channel()
                channel.queue_delete(name)
                channel.close()
                channel = conn.channel()
                try:
                    channel.exchange_delete(name)
                    channel.close()
                except pika.exceptions.ChannelClosed:
                    pass  # no such exchange: the system published to the default exchange
        finally:
            conn.close()
