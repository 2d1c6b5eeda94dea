"""The Publisher contract, run over the stdout twin and over a real RabbitMQ."""

from __future__ import annotations

from datetime import timedelta

from publish_support import NOW, Harness, make_schedule

from beatd.ids import fire_id
from beatd.model import Format
from beatd.publish.base import Result, Status
from beatd.publish.messages import build_message


def test_one_message_is_confirmed_and_delivered_as_built(harness: Harness) -> None:
    schedule = make_schedule(queue=harness.queue, args=(1, "two"), kwargs={"k": {"n": [3]}})
    message = build_message(schedule, NOW, NOW)

    results = harness.publisher.publish([message], NOW)

    assert results == [Result(message.fire_id, Status.CONFIRMED)]
    [got] = harness.read(1)
    assert got.fire_id == fire_id("job", NOW)
    assert got.exchange == ""
    assert got.routing_key == harness.queue
    assert got.body == [[1, "two"], {"k": {"n": [3]}}, {
        "callbacks": None, "errbacks": None, "chain": None, "chord": None,
    }]  # fmt: skip
    assert got.headers["id"] == got.headers["root_id"] == message.fire_id
    assert got.headers["task"] == "app.tasks.job"
    assert got.headers["beatd-scheduled-for"] == "2026-11-27T12:00:00Z"


def test_json_format_is_delivered_as_built(harness: Harness) -> None:
    schedule = make_schedule(queue=harness.queue, format=Format.JSON, kwargs={"a": 1})
    message = build_message(schedule, NOW, NOW + timedelta(seconds=3))

    assert harness.publisher.publish([message], NOW) == [Result(message.fire_id, Status.CONFIRMED)]
    [got] = harness.read(1)
    assert got.body == {
        "schedule": "job",
        "task": "app.tasks.job",
        "args": [],
        "kwargs": {"a": 1},
        "scheduled_for": "2026-11-27T12:00:00Z",
        "fire_id": message.fire_id,
    }


def test_a_batch_of_2000_is_confirmed_and_delivered_in_order(harness: Harness) -> None:
    schedule = make_schedule(queue=harness.queue)
    messages = [build_message(schedule, NOW + timedelta(minutes=i), NOW) for i in range(2000)]

    results = harness.publisher.publish(messages, NOW)

    assert [r.fire_id for r in results] == [m.fire_id for m in messages]
    assert {r.status for r in results} == {Status.CONFIRMED}
    assert [g.fire_id for g in harness.read(2000)] == [m.fire_id for m in messages]


def test_expired_messages_are_not_sent_and_order_is_kept(harness: Harness) -> None:
    schedule = make_schedule(queue=harness.queue, expires=timedelta(seconds=30))
    stale = build_message(schedule, NOW - timedelta(minutes=5), NOW)
    exactly_due = build_message(schedule, NOW - timedelta(seconds=30), NOW)
    fresh_before = build_message(schedule, NOW, NOW)
    fresh_after = build_message(schedule, NOW + timedelta(minutes=5), NOW)

    results = harness.publisher.publish([fresh_before, stale, exactly_due, fresh_after], NOW)

    assert [(r.fire_id, r.status) for r in results] == [
        (fresh_before.fire_id, Status.CONFIRMED),
        (stale.fire_id, Status.EXPIRED),
        (exactly_due.fire_id, Status.EXPIRED),
        (fresh_after.fire_id, Status.CONFIRMED),
    ]
    assert results[1].reason == "expired at 2026-11-27T11:55:30Z before it could be sent"
    assert [g.fire_id for g in harness.read(2)] == [fresh_before.fire_id, fresh_after.fire_id]


def test_an_all_expired_batch_needs_no_broker(harness: Harness) -> None:
    schedule = make_schedule(queue=harness.queue, expires=timedelta(seconds=1))
    message = build_message(schedule, NOW - timedelta(hours=1), NOW)
    assert [r.status for r in harness.publisher.publish([message], NOW)] == [Status.EXPIRED]


def test_an_empty_batch_returns_no_results(harness: Harness) -> None:
    assert harness.publisher.publish([], NOW) == []


def test_the_same_fire_twice_in_a_batch_is_sent_twice_with_one_id(harness: Harness) -> None:
    message = build_message(make_schedule(queue=harness.queue), NOW, NOW)
    results = harness.publisher.publish([message, message], NOW)
    assert [r.status for r in results] == [Status.CONFIRMED, Status.CONFIRMED]
    assert {g.fire_id for g in harness.read(2)} == {message.fire_id}


def test_check_close_and_publish_again(harness: Harness) -> None:
    assert harness.publisher.check() is None
    harness.publisher.close()
    harness.publisher.close()
    message = build_message(make_schedule(queue=harness.queue), NOW, NOW)
    assert [r.status for r in harness.publisher.publish([message], NOW)] == [Status.CONFIRMED]
    harness.read(1)
