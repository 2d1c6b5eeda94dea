"""Helpers shared by the publisher tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from beatd.model import Every, Schedule
from beatd.publish.base import Publisher

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def make_schedule(name: str = "job", **options: Any) -> Schedule:
    options.setdefault("spec", Every(timedelta(minutes=5)))
    options.setdefault("task", "app.tasks.job")
    return Schedule(name=name, **options)


@dataclass
class Received:
    """One message as a consumer saw it; `properties` only for RabbitMQ."""

    fire_id: str
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    body: Any
    properties: Any = None


@dataclass
class Harness:
    kind: str
    publisher: Publisher
    queue: str
    read: Callable[[int], list[Received]]
    extra: dict[str, Any] = field(default_factory=dict)


def io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "beatd-amqp-io" and t.is_alive()]


def consume(channel: Any, queue: str, count: int, timeout: float = 10.0) -> list[Received]:
    """Exactly `count` messages from `queue` (fails on fewer within timeout)."""
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            assert time.monotonic() < deadline, f"got {len(got)} of {count} messages"
            time.sleep(0.02)
            continue
        got.append(
            Received(
                fire_id=props.message_id,
                exchange=method.exchange,
                routing_key=method.routing_key,
                headers=dict(props.headers or {}),
                body=json.loads(body),
                properties=props,
            )
        )
    return got


def queue_depth(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def _connection_pids(connection_name: str) -> list[str]:
    if shutil.which("rabbitmqctl") is None:
        message = "rabbitmqctl is not available (it ships with rabbitmq-server)"
        if os.environ.get("BEATD_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} and BEATD_REQUIRE_SERVICES=1")
        pytest.skip(message)
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    marker = f'{{"connection_name","{connection_name}"}}'
    return [line.split("\t", 1)[0] for line in listing.stdout.splitlines() if marker in line]


def broker_connections(connection_name: str) -> int:
    """How many connections named `connection_name` the broker holds."""
    return len(_connection_pids(connection_name))


def rabbitmqctl_close(connection_name: str) -> int:
    """Close the broker connections named `connection_name`; returns how many.

    Only ours: `close_all_connections` would cut every engineer's tests.
    """
    pids = _connection_pids(connection_name)
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "close_connection", pid, "beatd test kill", "-q"],
            capture_output=True,
            timeout=60,
            check=False,  # it may be gone already
        )
    return len(pids)
