"""Pure: one fire of a schedule -> the Message its publisher sends verbatim.

Two formats (SPEC §6):

- ``celery``: Celery task protocol v2, as ``celery.app.amqp.AMQP.as_task_v2``
  builds it and ``celery.worker.strategy`` reads it: body
  ``[args, kwargs, embed]``, task metadata in the headers, the task id as the
  AMQP ``correlation_id`` (set by the publisher from ``fire_id``).
  ``datetime``/``date``/``time`` values in args and kwargs (TOML has them)
  use kombu's JSON envelope ``{"__type__": ..., "__value__": iso}``, so the
  worker's task receives real datetimes.
- ``json``: ``{"schedule", "task", "args", "kwargs", "scheduled_for",
  "fire_id"}``, instants as ISO-8601 UTC ending in ``Z``; datetimes inside
  args and kwargs become ISO strings.

Both carry the ``beatd-scheduled-for`` header (the nominal instant, ISO ``Z``)
so consumers can measure lateness, and ``beatd-manual: true`` on triggers.

The message id is ``fire_id(schedule.name, scheduled_for)``: the nominal
instant, before jitter, so the same fire always has the same id.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from beatd.errors import ScheduleError
from beatd.ids import fire_id
from beatd.model import EPOCH, Format, Message, Once, Schedule

SCHEDULED_FOR_HEADER = "beatd-scheduled-for"
MANUAL_HEADER = "beatd-manual"

# Celery's default argsrepr/kwargsrepr size (AMQP.argsrepr_maxsize).
_REPR_MAX = 1024

SHORT_MAX = 255  # bytes of UTF-8 in an AMQP short string: a header's name
_LONG = (-(2**63), 2**63 - 1)  # an AMQP signed long: the widest integer pika encodes
# Never reached: args and kwargs are at most 64 KiB of JSON each (codec.MAX_PAYLOAD).
MESSAGE_MAX = 16 * 1024 * 1024  # RabbitMQ 4's default max_message_size (3.x: 128 MiB)
FRAME_MAX = 131_072  # RabbitMQ's and pika's default frame_max: one header frame must fit
TTL_MAX = timedelta(days=3650)  # RabbitMQ refuses a message TTL over 10 years (check_expiry)
_SAMPLE_AT = datetime(2000, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)  # the longest ISO instant


def iso_z(instant: datetime) -> str:
    """An aware instant as ISO-8601 UTC with a trailing Z (microseconds if any)."""
    if instant.tzinfo is None:
        raise ValueError("iso_z needs an aware datetime")
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_message(
    schedule: Schedule,
    scheduled_for: datetime,
    publish_at: datetime,
    *,
    manual: bool = False,
    origin: str = "beatd",
) -> Message:
    """The message of `schedule`'s fire at `scheduled_for` (nominal, aware).

    `publish_at` is scheduled_for + jitter (or the moment a trigger was asked
    for); only the publish is delayed by it, never the id or ``expires``.
    Raises ScheduleError when args, kwargs or headers cannot be encoded (a
    float or other non-AMQP value in headers, a non-JSON value in args).
    """
    if scheduled_for.tzinfo is None or publish_at.tzinfo is None:
        raise ValueError("build_message needs aware datetimes")
    scheduled_for = scheduled_for.astimezone(UTC)
    fid = fire_id(schedule.name, scheduled_for)
    expires_at = _expires_at(schedule, scheduled_for)
    headers = _user_headers(schedule) if schedule.headers else {}
    if schedule.format is Format.CELERY:
        body = _celery_body(schedule)
        headers.update(_celery_headers(schedule, fid, expires_at, origin))
    else:
        body = _json_body(schedule, fid, scheduled_for)
    headers[SCHEDULED_FOR_HEADER] = iso_z(scheduled_for)
    if manual:
        headers[MANUAL_HEADER] = True
    return Message(
        fire_id=fid,
        schedule=schedule.name,
        scheduled_for=scheduled_for,
        publish_at=publish_at.astimezone(UTC),
        exchange=schedule.exchange,
        routing_key=schedule.route,
        body=body,
        headers=headers,
        priority=schedule.priority,
        expires_at=expires_at,
        # On the default exchange the routing key *is* the queue's name.
        queue=schedule.route if schedule.exchange == "" else None,
    )


def _expires_at(schedule: Schedule, scheduled_for: datetime) -> datetime | None:
    if schedule.expires is None:
        return None
    try:
        return scheduled_for + schedule.expires
    except OverflowError:  # a fire in year 9997 (backfill) that expires after 9999
        raise ScheduleError(
            schedule.name, "expires", f"a fire at {iso_z(scheduled_for)} would expire after 9999"
        ) from None


def _celery_headers(
    schedule: Schedule, fid: str, expires_at: datetime | None, origin: str
) -> dict[str, Any]:
    if schedule.args or schedule.kwargs:
        argsrepr, kwargsrepr = _short_repr(tuple(schedule.args)), _short_repr(dict(schedule.kwargs))
    else:
        argsrepr, kwargsrepr = _NO_ARGS_REPR
    return {
        "lang": "py",
        "task": schedule.task,
        "id": fid,
        "shadow": None,
        "eta": None,  # jitter delays the publish itself; a worker runs it on receipt
        "expires": expires_at.isoformat() if expires_at is not None else None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": fid,
        "parent_id": None,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
        "origin": origin,
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }


def _celery_body(schedule: Schedule) -> bytes:
    if not schedule.args and not schedule.kwargs:
        return _NO_ARGS_BODY
    return _celery_payload(schedule.name, schedule.args, schedule.kwargs)


def _celery_payload(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return _dumps(name, [list(args), dict(kwargs), embed], _kombu_default)


def _json_body(schedule: Schedule, fid: str, scheduled_for: datetime) -> bytes:
    payload = {
        "schedule": schedule.name,
        "task": schedule.task,
        "args": list(schedule.args),
        "kwargs": dict(schedule.kwargs),
        "scheduled_for": iso_z(scheduled_for),
        "fire_id": fid,
    }
    return _dumps(schedule.name, payload, _iso_default)


def _dumps(name: str, payload: object, default: Any) -> bytes:
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=default)
    except (TypeError, ValueError) as exc:
        raise ScheduleError(name, "args", f"cannot encode as JSON: {exc}") from None
    return text.encode("utf-8")


def _kombu_default(value: object) -> object:
    # kombu.utils.json registers datetime before date (a datetime is a date).
    if isinstance(value, datetime):
        return {"__type__": "datetime", "__value__": value.isoformat()}
    if isinstance(value, date):
        return {"__type__": "date", "__value__": value.isoformat()}
    if isinstance(value, time):
        return {"__type__": "time", "__value__": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _iso_default(value: object) -> object:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def _user_headers(schedule: Schedule) -> dict[str, Any]:
    """The schedule's headers as AMQP field-table values; ScheduleError when one cannot be.

    Headers beatd sets itself are left out (a definition stored before they
    were refused at the door keeps loading).
    """
    reserved = BEATD_HEADERS[schedule.format]
    try:
        return dict(_header(k, v) for k, v in schedule.headers.items() if k not in reserved)
    except _Unsendable as exc:
        raise ScheduleError(schedule.name, exc.where, exc.problem) from None


def _header(key: str, value: object) -> tuple[str, object]:
    """One of a schedule's headers as pika encodes it; _Unsendable when it cannot be."""
    return _header_key("headers", key), _header_value(_where("headers", key), value)


class _Unsendable(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


def _where(where: str, key: object) -> str:
    text = str(key)
    return f"{where}.{text if len(text) <= 40 else text[:37] + '...'}"


def _header_key(where: str, key: object) -> str:
    text = str(key)
    size = len(_utf8(_where(where, text), text))
    if size > SHORT_MAX:
        raise _Unsendable(
            _where(where, text),
            f"a header name is at most {SHORT_MAX} bytes as UTF-8 (an AMQP short string), "
            f"this one is {size}",
        )
    return text


def _utf8(where: str, text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise _Unsendable(where, f"holds text that is not valid Unicode: {bad!r}") from None


def _header_value(where: str, value: object) -> object:
    """`value` as pika encodes it into a field table (no floats, longs of 64 bits at most)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _utf8(where, value)
        return value
    if isinstance(value, int):
        if not _LONG[0] <= value <= _LONG[1]:
            raise _Unsendable(
                where, f"{value} does not fit in 64 bits (an AMQP long); write it as a string"
            )
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_header_value(where, item) for item in value]
    if isinstance(value, Mapping):
        return {_header_key(where, k): _header_value(_where(where, k), v) for k, v in value.items()}
    if isinstance(value, float):
        shown = f"{value!r} is a number with a fraction"
    else:
        shown = f"{type(value).__name__} values cannot be sent"
    raise _Unsendable(
        where,
        f"{shown}: AMQP headers carry strings, whole numbers, booleans, lists and tables "
        "(write it as a string)",
    )


def header_problems(headers: Mapping[str, Any], format: Format) -> list[tuple[str, str]]:
    """Headers beatd sets itself or AMQP cannot carry: (key, problem) pairs, [] when none."""
    problems: list[tuple[str, str]] = []
    for key, value in headers.items():
        if key in BEATD_HEADERS[format]:
            problems.append(
                (_where("headers", key), f"beatd sets this header itself ({format} format)")
            )
            continue
        try:
            _header(key, value)
        except _Unsendable as exc:
            problems.append((exc.where, exc.problem))
    return problems


def frame_problem(schedule: Schedule) -> str | None:
    """Why the fires of `schedule` would not fit a frame of FRAME_MAX, or None.

    The header frame can only grow past it through the schedule's own headers
    (task and queue names and argument reprs are bounded; tests/test_hostile_input.py
    checks the largest), so only a schedule with headers has a message built
    and encoded here.
    """
    if not schedule.headers:
        return None
    from beatd.publish.amqp_wire import message_problem  # pika: only when headers are set

    message = build_message(schedule, _SAMPLE_AT, _SAMPLE_AT, manual=True)
    return message_problem(message, FRAME_MAX)


# Most schedules have no args and no kwargs: their Celery body and reprs are
# the same for every fire, so they are made once rather than per fire.
_NO_ARGS_BODY = _celery_payload("", (), {})
_NO_ARGS_REPR = (_short_repr(()), _short_repr({}))


_OWN = frozenset({SCHEDULED_FOR_HEADER, MANUAL_HEADER})
BEATD_HEADERS = {
    Format.CELERY: _OWN | frozenset(_celery_headers(Schedule("-", Once(EPOCH), "-"), "", None, "")),
    Format.JSON: _OWN,
}
"""Per format, the headers beatd sets on every message: a schedule may not set them."""


def expired_reason(message: Message) -> str:
    """The reason a publisher gives for an EXPIRED result."""
    when = iso_z(message.expires_at) if message.expires_at is not None else "?"
    return f"expired at {when} before it could be sent"


# --- the outbox form of a Message -------------------------------------------


def message_to_json(message: Message) -> str:
    """One JSON object holding every field of `message`; see message_from_json."""
    try:
        text = message.body.decode("utf-8")
        body, body_encoding = text, "utf-8"
    except UnicodeDecodeError:
        body, body_encoding = base64.b64encode(message.body).decode("ascii"), "base64"
    return json.dumps(
        {
            "fire_id": message.fire_id,
            "schedule": message.schedule,
            "scheduled_for": iso_z(message.scheduled_for),
            "publish_at": iso_z(message.publish_at),
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "body": body,
            "body_encoding": body_encoding,
            "content_type": message.content_type,
            "content_encoding": message.content_encoding,
            "headers": dict(message.headers),
            "priority": message.priority,
            "expires_at": iso_z(message.expires_at) if message.expires_at else None,
            "queue": message.queue,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def message_from_json(text: str) -> Message:
    """The Message that message_to_json wrote; raises ValueError on bad input."""
    try:
        data = json.loads(text)
        if data["body_encoding"] == "base64":
            body = base64.b64decode(data["body"])
        else:
            body = str(data["body"]).encode(data["body_encoding"])
        expires_at = data["expires_at"]
        return Message(
            fire_id=str(data["fire_id"]),
            schedule=str(data["schedule"]),
            scheduled_for=_parse_instant(data["scheduled_for"]),
            publish_at=_parse_instant(data["publish_at"]),
            exchange=str(data["exchange"]),
            routing_key=str(data["routing_key"]),
            body=body,
            content_type=str(data["content_type"]),
            content_encoding=str(data["content_encoding"]),
            headers=dict(data["headers"]),
            priority=data["priority"],
            expires_at=_parse_instant(expires_at) if expires_at is not None else None,
            queue=data["queue"],
        )
    except (KeyError, TypeError, LookupError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a stored beatd message: {exc!r}") from None


def _parse_instant(text: str) -> datetime:
    instant = datetime.fromisoformat(text)
    if instant.tzinfo is None or instant.utcoffset() != timedelta(0):
        raise ValueError(f"not a UTC instant: {text!r}")
    return instant.astimezone(UTC)
