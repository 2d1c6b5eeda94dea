"""Publisher fixtures: the same contract over stdout and a real RabbitMQ.

Each RabbitMQ test gets its own queue (a uuid name), deleted at teardown, and
a publisher whose connection has its own name, so rabbitmqctl can close
exactly that connection and no one else's.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from publish_support import Harness, Received, consume, io_threads

from beatd.publish.amqp import AmqpPublisher
from beatd.publish.stdout import StdoutPublisher


@pytest.fixture
def amqp_channel(amqp_server: str) -> Iterator[Any]:
    """A plain pika channel for declaring, consuming and cleaning up."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_server))
    try:
        yield conn.channel()
    finally:
        conn.close()


@pytest.fixture
def queue_name(amqp_channel: Any) -> Iterator[str]:
    """A unique queue name; the queue (if anyone made it) is deleted afterwards."""
    name = f"beatd-test-{uuid.uuid4().hex[:12]}"
    yield name
    amqp_channel.queue_delete(name)


@pytest.fixture
def amqp_publisher(amqp_server: str) -> Iterator[AmqpPublisher]:
    name = f"beatd-test-{uuid.uuid4().hex[:12]}"
    publisher = AmqpPublisher(amqp_server, name=name, confirm_timeout=15.0)
    yield publisher
    publisher.close()
    publisher.close()
    # Hygiene: closing leaves no I/O thread behind.
    deadline = time.monotonic() + 5
    while io_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not io_threads(), "an AMQP I/O thread outlived close()"


@pytest.fixture(params=["stdout", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def harness(request: pytest.FixtureRequest) -> Harness:
    """The publisher contract, over the stdout twin and over RabbitMQ."""
    if request.param == "stdout":
        stream = io.StringIO()
        publisher = StdoutPublisher(stream)
        read_lines = [0]

        def read(count: int) -> list[Received]:
            lines = stream.getvalue().splitlines()[read_lines[0] :]
            assert len(lines) >= count, f"printed {len(lines)} of {count} messages"
            read_lines[0] += count
            records = [json.loads(line) for line in lines[:count]]
            return [
                Received(r["fire_id"], r["exchange"], r["routing_key"], r["headers"], r["body"])
                for r in records
            ]

        request.addfinalizer(publisher.close)
        return Harness("stdout", publisher, "celery", read, {"stream": stream})
    amqp_pub: AmqpPublisher = request.getfixturevalue("amqp_publisher")
    channel = request.getfixturevalue("amqp_channel")
    queue = request.getfixturevalue("queue_name")
    return Harness(
        "rabbitmq",
        amqp_pub,
        queue,
        lambda count: consume(channel, queue, count),
        {"channel": channel},
    )
