"""build_message: the Celery v2 and json shapes, ids, expiry, routing, the outbox form."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from publish_support import NOW, make_schedule

from beatd.errors import ScheduleError
from beatd.ids import fire_id
from beatd.model import Format, Message
from beatd.publish.messages import build_message, iso_z, message_from_json, message_to_json

Ask = Callable[[dict[str, Any]], dict[str, Any]]  # the conftest's celery_reference
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_celery_message_matches_what_celery_itself_builds(celery_reference: Ask) -> None:
    """Same task id, args and kwargs through Celery's own as_task_v2."""
    schedule = make_schedule(
        args=(1, "two", [3]), kwargs={"n": {"deep": [1, None]}}, expires=timedelta(minutes=10)
    )
    message = build_message(schedule, NOW, NOW, origin="beatd@host")
    task = {
        "id": message.fire_id,
        "name": schedule.task,
        "args": list(schedule.args),
        "kwargs": dict(schedule.kwargs),
        "expires": (NOW + timedelta(minutes=10)).isoformat(),
        "origin": "beatd@host",
    }
    reference = celery_reference({"task_v2": task})["task_v2"]

    ours = {k: v for k, v in message.headers.items() if not k.startswith("beatd-")}
    assert json.loads(json.dumps(ours)) == reference["headers"]  # AMQP has no tuples either
    assert json.loads(message.body) == reference["body"]
    assert reference["properties"]["correlation_id"] == message.fire_id  # the publisher sets it


@pytest.mark.parametrize(
    ("options", "exchange", "routing_key", "queue"),
    [
        ({}, "", "celery", "celery"),
        ({"queue": "reports"}, "", "reports", "reports"),
        ({"queue": "reports", "routing_key": "other"}, "", "other", "other"),
        ({"exchange": "tasks", "routing_key": "rk"}, "tasks", "rk", None),
        ({"exchange": "tasks", "queue": "q"}, "tasks", "q", None),
    ],
    ids=["defaults", "queue", "routing-key-on-default-exchange", "exchange", "exchange-queue-key"],
)
def test_routing(
    options: dict[str, Any], exchange: str, routing_key: str, queue: str | None
) -> None:
    message = build_message(make_schedule(**options), NOW, NOW)
    assert (message.exchange, message.routing_key, message.queue) == (exchange, routing_key, queue)


def test_celery_shape() -> None:
    schedule = make_schedule("nightly", task="reports.nightly", args=(1,), kwargs={"full": True})
    message = build_message(schedule, NOW, NOW + timedelta(seconds=7))
    fid = fire_id("nightly", NOW)

    assert json.loads(message.body) == [[1], {"full": True}, EMBED]
    assert message.headers == {
        "lang": "py",
        "task": "reports.nightly",
        "id": fid,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": fid,
        "parent_id": None,
        "argsrepr": "(1,)",
        "kwargsrepr": "{'full': True}",
        "origin": "beatd",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
        "beatd-scheduled-for": "2026-11-27T12:00:00Z",
    }
    assert (message.content_type, message.content_encoding) == ("application/json", "utf-8")
    assert message.fire_id == fid
    assert message.schedule == "nightly"
    assert message.scheduled_for == NOW
    assert message.publish_at == NOW + timedelta(seconds=7)
    assert message.expires_at is None
    assert message.priority is None


def test_json_shape() -> None:
    schedule = make_schedule("ping", format=Format.JSON, args=("a",), kwargs={"b": [1]})
    at = datetime(2026, 3, 29, 1, 30, 0, 250000, tzinfo=UTC)
    message = build_message(schedule, at, at, manual=True)

    assert json.loads(message.body) == {
        "schedule": "ping",
        "task": "app.tasks.job",
        "args": ["a"],
        "kwargs": {"b": [1]},
        "scheduled_for": "2026-03-29T01:30:00.250000Z",
        "fire_id": fire_id("ping", at),
    }
    assert message.headers == {
        "beatd-scheduled-for": "2026-03-29T01:30:00.250000Z",
        "beatd-manual": True,
    }


@pytest.mark.parametrize("fmt", list(Format), ids=str)
def test_the_id_is_the_nominal_fire_whatever_the_jitter(fmt: Format) -> None:
    schedule = make_schedule(format=fmt, jitter=timedelta(seconds=30))
    on_time = build_message(schedule, NOW, NOW)
    jittered = build_message(schedule, NOW, NOW + timedelta(seconds=29))
    berlin = build_message(schedule, NOW.astimezone(ZoneInfo("Europe/Berlin")), NOW)
    later = build_message(schedule, NOW + timedelta(seconds=1), NOW)
    other = build_message(make_schedule("other", format=fmt), NOW, NOW)

    assert on_time.fire_id == jittered.fire_id == berlin.fire_id == fire_id("job", NOW)
    assert on_time.body == jittered.body == berlin.body
    assert len({on_time.fire_id, later.fire_id, other.fire_id}) == 3
    assert berlin.scheduled_for.tzinfo is UTC


@pytest.mark.parametrize(
    ("expires", "header", "expires_at"),
    [
        (None, None, None),
        (timedelta(seconds=90), "2026-11-27T12:01:30+00:00", NOW + timedelta(seconds=90)),
        (timedelta(days=1), "2026-11-28T12:00:00+00:00", NOW + timedelta(days=1)),
    ],
    ids=["none", "90s", "1d"],
)
def test_expires_counts_from_the_nominal_instant(
    expires: timedelta | None, header: str | None, expires_at: datetime | None
) -> None:
    schedule = make_schedule(expires=expires)
    message = build_message(schedule, NOW, NOW + timedelta(seconds=20))  # jitter: no effect
    assert message.headers["expires"] == header
    assert message.expires_at == expires_at


def test_schedule_headers_are_added_but_cannot_forge_identity() -> None:
    schedule = make_schedule(
        headers={
            "tenant": "acme",
            "id": "forged",
            "task": "evil",
            "beatd-scheduled-for": "never",
            "timelimit": [60, 30],
            "when": datetime(2026, 1, 1, tzinfo=UTC),
            "nested": {"list": (1, "x", date(2026, 1, 2))},
        },
        priority=3,
    )
    message = build_message(schedule, NOW, NOW)
    assert message.headers["tenant"] == "acme"
    assert message.headers["id"] == message.fire_id
    assert message.headers["task"] == "app.tasks.job"
    assert message.headers["beatd-scheduled-for"] == "2026-11-27T12:00:00Z"
    assert message.headers["timelimit"] == [None, None]  # the protocol default wins
    assert message.headers["when"] == "2026-01-01T00:00:00+00:00"
    assert message.headers["nested"] == {"list": [1, "x", "2026-01-02"]}
    assert message.priority == 3


@pytest.mark.parametrize("value", [0.5, {1, 2}, b"raw"], ids=["float", "set", "bytes"])
def test_header_values_amqp_cannot_carry_name_the_key(value: object) -> None:
    schedule = make_schedule("bad", headers={"nested": {"x": value}})
    with pytest.raises(ScheduleError, match=r"schedule 'bad': headers\.nested\.x: "):
        build_message(schedule, NOW, NOW)


def test_datetimes_in_args_reach_celery_as_datetimes(celery_reference: Ask) -> None:
    when = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
    schedule = make_schedule(args=(when,), kwargs={"day": date(2026, 5, 1)})
    body = build_message(schedule, NOW, NOW).body.decode()
    args, kwargs, _embed = celery_reference({"loads": body})["loads"]
    assert args == [{"datetime": "2026-05-01T08:30:00+00:00"}]
    assert kwargs == {"day": {"date": "2026-05-01"}}


def test_datetimes_in_args_are_iso_strings_in_json_format() -> None:
    when = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
    schedule = make_schedule(format=Format.JSON, args=(when,))
    assert json.loads(build_message(schedule, NOW, NOW).body)["args"] == [
        "2026-05-01T08:30:00+00:00"
    ]


def test_unencodable_args_name_the_schedule() -> None:
    with pytest.raises(ScheduleError, match="schedule 'job': args: cannot encode as JSON"):
        build_message(make_schedule(args=(object(),)), NOW, NOW)


def test_long_reprs_are_cut_like_celery_does() -> None:
    message = build_message(make_schedule(args=("x" * 5000,)), NOW, NOW)
    assert len(message.headers["argsrepr"]) == 1024
    assert message.headers["argsrepr"].endswith("...")


def test_non_ascii_is_utf8() -> None:
    message = build_message(make_schedule(kwargs={"city": "Zürich"}), NOW, NOW)
    assert "Zürich".encode() in message.body


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        build_message(make_schedule(), NOW.replace(tzinfo=None), NOW)
    with pytest.raises(ValueError, match="aware"):
        build_message(make_schedule(), NOW, NOW.replace(tzinfo=None))


def test_iso_z() -> None:
    assert iso_z(NOW) == "2026-11-27T12:00:00Z"
    assert iso_z(NOW.astimezone(ZoneInfo("Asia/Tokyo"))) == "2026-11-27T12:00:00Z"
    with pytest.raises(ValueError):
        iso_z(NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    "message",
    [
        build_message(make_schedule(expires=timedelta(minutes=1), priority=4), NOW, NOW),
        build_message(make_schedule(format=Format.JSON, queue="q"), NOW, NOW, manual=True),
        Message(
            fire_id="f",
            schedule="s",
            scheduled_for=NOW,
            publish_at=NOW + timedelta(seconds=3),
            exchange="x",
            routing_key="rk",
            body=b"\xff\x00binary",
            content_type="application/octet-stream",
            content_encoding="binary",
        ),
    ],
    ids=["celery", "json", "binary-body"],
)
def test_outbox_form_round_trips(message: Message) -> None:
    text = message_to_json(message)
    assert "\n" not in text
    assert message_from_json(text) == message


@pytest.mark.parametrize(
    "text", ["", "[]", "{}", '{"body_encoding": "utf-8"}'], ids=["empty", "list", "obj", "partial"]
)
def test_outbox_form_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a stored beatd message"):
        message_from_json(text)
