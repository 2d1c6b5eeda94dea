"""What only a real RabbitMQ can show: properties, returns, declarations, outages."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from publish_support import (
    NOW,
    broker_connections,
    consume,
    io_threads,
    make_schedule,
    queue_depth,
    rabbitmqctl_close,
)

from beatd.errors import BrokerError
from beatd.model import Message
from beatd.publish import amqp_wire
from beatd.publish.amqp import AmqpPublisher
from beatd.publish.base import Result, Status
from beatd.publish.messages import build_message
from beatd.publish.retry import RetryPolicy

pytestmark = pytest.mark.rabbitmq


def test_properties_are_persistent_identified_and_carry_the_ttl(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    schedule = make_schedule(queue=queue_name, expires=timedelta(minutes=2), priority=7)
    message = build_message(schedule, NOW, NOW)
    now = NOW + timedelta(seconds=30, milliseconds=250)

    assert amqp_publisher.publish([message], now)[0].status is Status.CONFIRMED

    [got] = consume(amqp_channel, queue_name, 1)
    props = got.properties
    assert props.message_id == message.fire_id
    assert props.correlation_id == message.fire_id
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.content_encoding == "utf-8"
    assert props.priority == 7
    assert props.expiration == "89750"  # expires_at - now, in ms
    assert props.timestamp == int(now.timestamp())
    assert got.headers["expires"] == "2026-11-27T12:02:00+00:00"
    assert got.headers["timelimit"] == [None, None]
    assert got.headers["parent_id"] is None
    assert got.headers["retries"] == 0


def test_a_prepared_message_arrives_as_an_unprepared_one_would(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    # The relay prepares fires when the tick hands them over, a second or two
    # ahead; only the timestamp differs: their publish instant, not the call's.
    plain = build_message(make_schedule("plain", queue=queue_name, priority=3), NOW, NOW)
    prepared = dataclasses.replace(plain, fire_id=f"{plain.fire_id}-p")
    with_ttl = build_message(
        make_schedule("ttl", queue=queue_name, expires=timedelta(minutes=2)), NOW, NOW
    )
    amqp_publisher.prepare([prepared, with_ttl])
    later = NOW + timedelta(seconds=1, milliseconds=5)

    results = amqp_publisher.publish([plain, prepared, with_ttl], later)
    assert [r.status for r in results] == [Status.CONFIRMED] * 3
    a, b, c = consume(amqp_channel, queue_name, 3)
    assert (a.fire_id, b.fire_id) == (plain.fire_id, prepared.fire_id)
    assert b.body == a.body and b.routing_key == a.routing_key and b.headers == a.headers
    for key in ("content_type", "content_encoding", "delivery_mode", "priority"):
        assert getattr(b.properties, key) == getattr(a.properties, key)
    assert b.properties.correlation_id == prepared.fire_id
    assert a.properties.timestamp == int(later.timestamp())
    assert b.properties.timestamp == int(prepared.publish_at.timestamp())
    assert c.properties.expiration == "118995"  # a TTL is counted when it is published


def test_frames_prepared_for_a_withdrawn_fire_are_not_sent_for_its_redefinition(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    # A change withdraws a fire recorded ahead and the tick records it again,
    # same fire id, as now defined: what goes out is the new message.
    old = build_message(make_schedule(queue=queue_name, task="app.tasks.old"), NOW, NOW)
    new = build_message(make_schedule(queue=queue_name, task="app.tasks.new"), NOW, NOW)
    assert old.fire_id == new.fire_id
    amqp_publisher.prepare([old])
    assert amqp_publisher.publish([new], NOW)[0].status is Status.CONFIRMED
    (got,) = consume(amqp_channel, queue_name, 1)
    assert got.headers["task"] == "app.tasks.new"


def test_a_message_prepared_before_a_reconnect_is_still_sent(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    schedule = make_schedule(queue=queue_name)
    first, second = (build_message(schedule, NOW + timedelta(seconds=i), NOW) for i in range(2))
    assert amqp_publisher.publish([first], NOW)[0].status is Status.CONFIRMED
    amqp_publisher.prepare([second])
    assert rabbitmqctl_close(amqp_publisher.name) == 1
    deadline = time.monotonic() + 10
    while amqp_publisher._link is not None and amqp_publisher._link.alive:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    assert amqp_publisher.publish([second], NOW)[0].status is Status.CONFIRMED
    assert [m.fire_id for m in consume(amqp_channel, queue_name, 2)] == [
        first.fire_id,
        second.fire_id,
    ]


def test_declares_a_missing_queue_durable(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    message = build_message(make_schedule(queue=queue_name), NOW, NOW)
    assert amqp_publisher.publish([message], NOW)[0].status is Status.CONFIRMED
    # A durable redeclare with no arguments succeeds only if ours was the same.
    amqp_channel.queue_declare(queue_name, durable=True)
    assert queue_depth(amqp_channel, queue_name) == 1


def test_an_existing_quorum_queue_is_not_redeclared(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    amqp_channel.queue_declare(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
    message = build_message(make_schedule(queue=queue_name), NOW, NOW)
    assert amqp_publisher.publish([message], NOW)[0].status is Status.CONFIRMED
    assert queue_depth(amqp_channel, queue_name) == 1


def test_unroutable_on_the_default_exchange_is_returned_with_reason(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    routed = build_message(make_schedule(queue=queue_name), NOW, NOW)
    nowhere = dataclasses.replace(
        build_message(make_schedule("lost", queue=f"{queue_name}-nowhere"), NOW, NOW),
        queue=None,  # do not declare it: nothing routes the message
    )

    results = amqp_publisher.publish([nowhere, routed], NOW)

    assert results == [
        Result(
            nowhere.fire_id,
            Status.RETURNED,
            f"unroutable: NO_ROUTE (exchange '', routing key '{queue_name}-nowhere')",
        ),
        Result(routed.fire_id, Status.CONFIRMED),
    ]
    assert queue_depth(amqp_channel, queue_name) == 1


def test_unroutable_on_an_existing_exchange_is_returned(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    exchange = f"{queue_name}-x"
    amqp_channel.exchange_declare(exchange, exchange_type="direct", auto_delete=False)
    try:
        amqp_channel.queue_declare(queue_name, durable=True)
        amqp_channel.queue_bind(queue_name, exchange, routing_key="bound")
        bound = build_message(make_schedule("a", exchange=exchange, routing_key="bound"), NOW, NOW)
        unbound = build_message(
            make_schedule("b", exchange=exchange, routing_key="unbound"), NOW, NOW
        )
        assert bound.queue is None  # only the default exchange declares queues

        results = amqp_publisher.publish([bound, unbound], NOW)

        assert [r.status for r in results] == [Status.CONFIRMED, Status.RETURNED]
        assert results[1].reason == (
            f"unroutable: NO_ROUTE (exchange '{exchange}', routing key 'unbound')"
        )
        [got] = consume(amqp_channel, queue_name, 1)
        assert got.fire_id == bound.fire_id
    finally:
        amqp_channel.exchange_delete(exchange)


def test_a_missing_exchange_returns_its_messages_and_sends_the_rest(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    exchange = f"{queue_name}-missing"
    lost = build_message(make_schedule("lost", exchange=exchange), NOW, NOW)
    sent = build_message(make_schedule(queue=queue_name), NOW, NOW)

    for _ in range(2):  # not cached: a later batch checks again
        results = amqp_publisher.publish([lost, sent], NOW)
        assert results == [
            Result(lost.fire_id, Status.RETURNED, f"unroutable: exchange '{exchange}' not found"),
            Result(sent.fire_id, Status.CONFIRMED),
        ]
    assert queue_depth(amqp_channel, queue_name) == 2

    amqp_channel.exchange_declare(exchange, exchange_type="direct")
    try:
        amqp_channel.queue_bind(queue_name, exchange, routing_key=lost.routing_key)
        assert amqp_publisher.publish([lost], NOW)[0].status is Status.CONFIRMED
    finally:
        amqp_channel.exchange_delete(exchange)


def test_a_message_pika_cannot_encode_fails_alone(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    good = build_message(make_schedule(queue=queue_name), NOW, NOW)
    bad = dataclasses.replace(good, fire_id="bad", headers={"ratio": 0.5})  # pika: no floats

    results = amqp_publisher.publish([bad, good], NOW)

    assert results[0] == Result(
        "bad", Status.FAILED, "cannot be sent: AMQP headers cannot carry a float value"
    )
    assert results[1] == Result(good.fire_id, Status.CONFIRMED)
    assert [g.fire_id for g in consume(amqp_channel, queue_name, 1)] == [good.fire_id]


def test_unreachable_broker_fails_fast_with_backoff_and_hides_the_password() -> None:
    clock = [100.0]
    publisher = AmqpPublisher(
        "amqp://guest:s3cr3t-pw@127.0.0.1:1/%2F",
        retry=RetryPolicy(initial=5.0, max=60.0, multiplier=2.0),
    )
    publisher._backoff._monotonic = lambda: clock[0]  # a fake clock for the gate
    message = build_message(make_schedule(), NOW, NOW)
    try:
        with pytest.raises(BrokerError) as first:
            publisher.publish([message], NOW)
        assert str(first.value) == (
            "cannot connect to amqp://guest:***@127.0.0.1:1/%2F: Connection refused"
        )
        started = time.monotonic()
        with pytest.raises(BrokerError, match=r"next attempt in 5\.0s") as second:
            publisher.publish([message], NOW)
        assert time.monotonic() - started < 0.5  # no network attempt while waiting
        problem = publisher.check()
        assert problem is not None and "unreachable (Connection refused)" in problem
        clock[0] += 5.0
        with pytest.raises(BrokerError, match="cannot connect"):  # tried again, failed again
            publisher.publish([message], NOW)
        with pytest.raises(BrokerError, match=r"next attempt in 10\.0s"):
            publisher.publish([message], NOW)
        for error in (first.value, second.value):
            assert "s3cr3t-pw" not in str(error)
            assert "\n" not in str(error)
            assert error.__cause__ is None and error.__suppress_context__
    finally:
        publisher.close()
    assert not io_threads()


def test_bad_credentials_are_one_clear_line(amqp_server: str) -> None:
    url = amqp_server.replace("guest:guest@", "guest:wr0ng-pw@")
    publisher = AmqpPublisher(url)
    try:
        with pytest.raises(BrokerError) as error:
            publisher.publish([build_message(make_schedule(), NOW, NOW)], NOW)
        assert "authentication failed" in str(error.value)
        assert "wr0ng-pw" not in str(error.value)
    finally:
        publisher.close()


def test_an_idle_connection_killed_by_the_broker_is_replaced_silently(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    message = build_message(make_schedule(queue=queue_name), NOW, NOW)
    assert amqp_publisher.publish([message], NOW)[0].status is Status.CONFIRMED
    link = amqp_publisher._link
    assert link is not None and link.alive
    assert rabbitmqctl_close(amqp_publisher.name) == 1
    deadline = time.monotonic() + 10
    while link.alive and time.monotonic() < deadline:  # the I/O thread notices at once
        time.sleep(0.05)
    assert not link.alive

    assert amqp_publisher.publish([message], NOW)[0].status is Status.CONFIRMED
    assert queue_depth(amqp_channel, queue_name) == 2


def test_connection_killed_mid_batch_raises_then_the_next_publish_reconnects(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    schedule = make_schedule(queue=queue_name)
    batch = [build_message(schedule, NOW + timedelta(seconds=i), NOW) for i in range(20_000)]
    assert amqp_publisher.publish(batch[:1], NOW)[0].status is Status.CONFIRMED  # connected
    errors: list[BaseException] = []
    publishing = threading.Event()
    stop = threading.Event()

    def keep_publishing() -> None:
        while not stop.is_set():
            publishing.set()
            try:
                amqp_publisher.publish(batch, NOW)
            except BrokerError as exc:
                errors.append(exc)
                return

    worker = threading.Thread(target=keep_publishing)
    worker.start()
    try:
        publishing.wait(10)
        deadline = time.monotonic() + 60
        while not errors and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
            rabbitmqctl_close(amqp_publisher.name)
    finally:
        stop.set()
        worker.join(60)
    assert errors, "the connection was never closed during a batch"
    assert isinstance(errors[0], BrokerError)
    assert "connection lost" in str(errors[0]) and "320" in str(errors[0])

    after = build_message(schedule, NOW - timedelta(days=1), NOW)
    assert amqp_publisher.publish([after], NOW) == [Result(after.fire_id, Status.CONFIRMED)]
    amqp_channel.queue_purge(queue_name)


def test_publish_is_safe_from_several_threads(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    schedules = [make_schedule(f"s{t}", queue=queue_name) for t in range(4)]
    outcomes: list[list[Result]] = []

    def run(index: int) -> None:
        messages = [
            build_message(schedules[index], NOW + timedelta(seconds=i), NOW) for i in range(300)
        ]
        outcomes.append(amqp_publisher.publish(messages, NOW))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(len(o) for o in outcomes) == [300] * 4
    assert {r.status for o in outcomes for r in o} == {Status.CONFIRMED}
    assert queue_depth(amqp_channel, queue_name) == 1200


def test_messages_with_unique_ids_never_mix_up_results(
    amqp_publisher: AmqpPublisher, queue_name: str
) -> None:
    # Returns are matched by message id: unroutable and routable fires interleave.
    routed = make_schedule("routed", queue=queue_name)
    lost = make_schedule("lost", queue=f"{queue_name}-none")
    messages: list[Message] = []
    for i in range(200):
        messages.append(build_message(routed, NOW + timedelta(seconds=i), NOW))
        lost_message = build_message(lost, NOW + timedelta(seconds=i), NOW)
        messages.append(dataclasses.replace(lost_message, queue=None))
    results = amqp_publisher.publish(messages, NOW)
    assert [r.status for r in results] == [Status.CONFIRMED, Status.RETURNED] * 200
    assert [r.fire_id for r in results] == [m.fire_id for m in messages]


def test_bodies_larger_than_a_frame_arrive_whole_and_in_order(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    # Frames are marshalled by beatd and written a chunk at a time: a body
    # over frame_max (128 KiB by default) spans several body frames.
    big = make_schedule("big", queue=queue_name, kwargs={"blob": "x" * 300_000})
    small = make_schedule("small", queue=queue_name)
    messages = [
        build_message(small, NOW, NOW),
        build_message(big, NOW, NOW),
        build_message(small, NOW + timedelta(seconds=1), NOW),
    ]
    results = amqp_publisher.publish(messages, NOW)
    assert [r.status for r in results] == [Status.CONFIRMED] * 3
    got = consume(amqp_channel, queue_name, 3)
    assert [g.fire_id for g in got] == [m.fire_id for m in messages]
    assert got[1].body[1] == {"blob": "x" * 300_000}  # Celery's body: [args, kwargs, embed]


def test_names_the_broker_refuses_fail_alone(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    good = build_message(make_schedule(queue=queue_name), NOW, NOW)
    reserved = build_message(make_schedule("r", queue=f"amq.{queue_name}"), NOW, NOW)
    too_long = build_message(make_schedule("l", queue="q" * 300), NOW, NOW)
    long_exchange = build_message(make_schedule("x", exchange="x" * 300), NOW, NOW)

    results = amqp_publisher.publish([reserved, too_long, long_exchange, good], NOW)

    statuses = [r.status for r in results]
    assert statuses == [Status.RETURNED, Status.FAILED, Status.FAILED, Status.CONFIRMED]
    assert results[0].reason == (
        f"unroutable: NO_ROUTE (exchange '', routing key 'amq.{queue_name}')"
    )
    assert results[1].reason is not None and results[1].reason.startswith(
        "cannot be sent: a name is over 255 bytes"
    )
    assert amqp_publisher.publish([good], NOW)[0].status is Status.CONFIRMED  # still connected
    assert queue_depth(amqp_channel, queue_name) == 2


def test_a_full_queue_that_rejects_publishes_nacks_the_overflow(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    amqp_channel.queue_declare(
        queue_name, durable=True, arguments={"x-max-length": 2, "x-overflow": "reject-publish"}
    )
    schedule = make_schedule(queue=queue_name)
    messages = [build_message(schedule, NOW + timedelta(minutes=i), NOW) for i in range(5)]

    results = amqp_publisher.publish(messages, NOW)

    assert [r.status for r in results] == [Status.CONFIRMED] * 2 + [Status.NACKED] * 3
    assert results[2].reason == "the broker nacked the message"
    amqp_channel.queue_purge(queue_name)
    assert amqp_publisher.publish(messages[2:3], NOW)[0].status is Status.CONFIRMED


def test_close_leaves_no_connection_on_the_broker(
    amqp_publisher: AmqpPublisher, queue_name: str
) -> None:
    message = build_message(make_schedule(queue=queue_name), NOW, NOW)
    assert amqp_publisher.publish([message], NOW)[0].status is Status.CONFIRMED
    assert broker_connections(amqp_publisher.name) == 1
    amqp_publisher.close()
    deadline = time.monotonic() + 10
    while broker_connections(amqp_publisher.name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert broker_connections(amqp_publisher.name) == 0
    assert not io_threads()


def _oversized(message: Message, size: int) -> Message:
    """`message` with headers making its header frame about `size` bytes (as an old outbox row)."""
    return dataclasses.replace(
        message, fire_id=f"{message.fire_id}-big", headers={**message.headers, "pad": "p" * size}
    )


@pytest.mark.parametrize("prepared", [False, True], ids=["unprepared", "prepared"])
@pytest.mark.parametrize("frame_max", [None, 8192], ids=["default-frame-max", "frame-max-8192"])
def test_a_message_over_the_negotiated_frame_max_fails_alone_and_is_never_written(
    amqp_server: str, amqp_channel: Any, queue_name: str, frame_max: int | None, prepared: bool
) -> None:
    # RabbitMQ closes the whole connection (501 FRAME_ERROR frame_too_large) on a
    # header frame over frame_max; on the old code nothing of the batch was delivered.
    url = amqp_server if frame_max is None else f"{amqp_server}?frame_max={frame_max}"
    publisher = AmqpPublisher(url, name=f"beatd-test-{queue_name}")
    limit = frame_max or 131_072
    try:
        good = build_message(make_schedule(queue=queue_name), NOW, NOW)
        big = _oversized(good, limit)
        fits = _oversized(good, limit // 2)  # over 4 KiB: never prepared, marshalled at write
        if prepared:
            publisher.prepare([big, fits, good])

        results = publisher.publish([big, fits, good], NOW)

        assert results[0].status is Status.FAILED
        assert results[0].reason is not None
        assert results[0].reason.startswith("cannot be sent: its header frame")
        assert f"over the frame_max of {limit}" in results[0].reason
        assert [r.status for r in results[1:]] == [Status.CONFIRMED] * 2
        again = build_message(make_schedule(queue=queue_name), NOW + timedelta(minutes=5), NOW)
        assert publisher.publish([again], NOW)[0].status is Status.CONFIRMED
        got = consume(amqp_channel, queue_name, 3)
        assert [g.fire_id for g in got] == [fits.fire_id, good.fire_id, again.fire_id]
        assert queue_depth(amqp_channel, queue_name) == 0
    finally:
        publisher.close()


def test_without_pikas_private_writer_basic_publish_sends_the_same_messages(
    amqp_publisher: AmqpPublisher,
    amqp_channel: Any,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pika release without _output_marshaled_frames must cost speed, not correctness.
    monkeypatch.setattr(amqp_wire, "marshalled_output", lambda conn: None)
    plain = build_message(make_schedule("plain", queue=queue_name, priority=3), NOW, NOW)
    prepared = build_message(make_schedule("prepared", queue=queue_name), NOW, NOW)
    ttl = build_message(
        make_schedule("ttl", queue=queue_name, expires=timedelta(minutes=2)), NOW, NOW
    )
    large = build_message(
        make_schedule("large", queue=queue_name, kwargs={"b": "x" * 300_000}), NOW, NOW
    )
    lost = dataclasses.replace(
        build_message(make_schedule("lost", queue=f"{queue_name}-none"), NOW, NOW), queue=None
    )
    big = _oversized(plain, 131_072)
    amqp_publisher.prepare([prepared])
    later = NOW + timedelta(seconds=1)

    results = amqp_publisher.publish([plain, big, prepared, lost, ttl, large], later)

    assert [r.status for r in results] == [
        Status.CONFIRMED,
        Status.FAILED,
        Status.CONFIRMED,
        Status.RETURNED,
        Status.CONFIRMED,
        Status.CONFIRMED,
    ]
    got = consume(amqp_channel, queue_name, 4)
    assert [g.fire_id for g in got] == [m.fire_id for m in (plain, prepared, ttl, large)]
    assert got[0].properties.priority == 3
    assert got[0].properties.timestamp == int(later.timestamp())
    assert got[1].properties.timestamp == int(prepared.publish_at.timestamp())
    assert got[2].properties.expiration == "119000"
    assert got[3].body[1] == {"b": "x" * 300_000}
    assert got[0].headers == dict(plain.headers)


def test_a_header_frame_of_exactly_frame_max_is_sent_one_byte_more_is_not(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    # RabbitMQ's bound: the whole frame (7-byte header, payload, end octet) <= frame_max.
    base = build_message(make_schedule(queue=queue_name), NOW, NOW)

    def framed(fire_id: str, size: int) -> Message:
        message = dataclasses.replace(base, fire_id=fire_id, headers={**base.headers, "pad": ""})
        props = amqp_wire.properties(message, NOW, None)
        empty = len(amqp_wire.header_frame(1, message, props, 1 << 30))
        return dataclasses.replace(message, headers={**base.headers, "pad": "p" * (size - empty)})

    exact, over = framed("a" * 36, 131_072), framed("b" * 36, 131_073)

    results = amqp_publisher.publish([exact, over], NOW)

    assert [r.status for r in results] == [Status.CONFIRMED, Status.FAILED]
    assert [g.fire_id for g in consume(amqp_channel, queue_name, 1)] == [exact.fire_id]


def test_a_message_whose_ttl_rabbitmq_refuses_fails_alone(
    amqp_publisher: AmqpPublisher, amqp_channel: Any, queue_name: str
) -> None:
    # RabbitMQ closes the channel (406 PRECONDITION_FAILED, value_too_large) on a
    # TTL over 10 years (found by fuzz/fuzz_message.py: expires = "36500d").
    good = build_message(make_schedule(queue=queue_name), NOW, NOW)
    forever = dataclasses.replace(good, fire_id="forever", expires_at=NOW + timedelta(days=3651))

    results = amqp_publisher.publish([forever, good], NOW)

    assert results[0] == Result(
        "forever",
        Status.FAILED,
        "cannot be sent: its TTL of 315446400000 ms is over RabbitMQ's 10 years",
    )
    assert results[1] == Result(good.fire_id, Status.CONFIRMED)
    assert [g.fire_id for g in consume(amqp_channel, queue_name, 1)] == [good.fire_id]
