"""What beatd puts on the AMQP wire: message properties, marshalled frames, error lines.

Frames are marshalled with pika's own classes, here rather than by
``basic_publish``: the relay prepares each fire's frames when the tick
records it, and the I/O thread writes a whole chunk as one buffer
(``basic_publish`` gives every frame its own ``send()``). Writing them uses
pika's private ``_output_marshaled_frames``; a pika without it gets
``basic_publish`` (``marshalled_output``). Either way a message whose header
frame is over the connection's frame_max is never written (``header_frame``):
RabbitMQ would close the whole connection for it.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable
from datetime import datetime, timedelta

import pika
import pika.exceptions
import pika.frame
import pika.spec

from beatd.model import Message
from beatd.publish.messages import MESSAGE_MAX, TTL_MAX

FRAME_OVERHEAD = pika.spec.FRAME_HEADER_SIZE + pika.spec.FRAME_END_SIZE
PREPARED_CHANNEL = 1  # the confirm channel: the first one opened on every connection
TTL_MAX_MS = TTL_MAX // timedelta(milliseconds=1)
PREPARED_FRAME_MAX = pika.spec.FRAME_MIN_SIZE  # frames this size fit any negotiated frame_max


class Unframeable(ValueError):
    """The message cannot go out on a connection with this frame_max (or at all)."""


ENCODE_ERRORS = (
    pika.exceptions.UnsupportedAMQPFieldException,
    pika.exceptions.ShortStringTooLong,
    struct.error,
    TypeError,
    ValueError,  # Unframeable among them
    OverflowError,
)


def properties(message: Message, now: datetime, ttl: int | None) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=dict(message.headers),
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=message.priority,
        correlation_id=message.fire_id,  # Celery reads the task id from here too
        message_id=message.fire_id,
        timestamp=int(now.timestamp()),
        expiration=str(ttl) if ttl is not None else None,
    )


def ttl_ms(message: Message, now: datetime) -> int | None:
    """The message's TTL in milliseconds when published at `now` (None: no expiry)."""
    if message.expires_at is None:
        return None
    return math.ceil((message.expires_at - now).total_seconds() * 1000)


def header_frame(
    channel: int, message: Message, props: pika.BasicProperties, frame_max: int
) -> bytes:
    """The message's content header frame; Unframeable when RabbitMQ would refuse it.

    RabbitMQ closes the whole connection (501 frame_too_large) on a frame over
    the negotiated frame_max, and the channel (406) on a TTL over 10 years or
    a body over its max_message_size, so such a message must never be written.
    """
    header: bytes = pika.frame.Header(channel, len(message.body), props).marshal()
    if len(header) > frame_max:
        raise Unframeable(
            f"its header frame (properties, headers, task name, argument reprs) is "
            f"{len(header)} bytes, over the frame_max of {frame_max}"
        )
    if props.expiration is not None and int(props.expiration) > TTL_MAX_MS:
        raise Unframeable(f"its TTL of {props.expiration} ms is over RabbitMQ's 10 years")
    if len(message.body) > MESSAGE_MAX:
        raise Unframeable(
            f"its body is {len(message.body)} bytes, over RabbitMQ's {MESSAGE_MAX} bytes"
        )
    return header


def message_problem(message: Message, frame_max: int) -> str | None:
    """Why `message` cannot be sent on a connection with `frame_max`, or None when it can."""
    try:
        props = properties(message, message.publish_at, ttl_ms(message, message.scheduled_for))
        header_frame(PREPARED_CHANNEL, message, props, frame_max)
    except ENCODE_ERRORS as exc:
        return f"cannot be sent: {describe(exc)}"
    return None


def marshal(channel: int, message: Message, props: pika.BasicProperties, frame_max: int) -> bytes:
    """The frames basic_publish would write (method, header, body), as one buffer.

    Raises Unframeable (or another of ENCODE_ERRORS) before anything is written.
    """
    body, body_max = message.body, frame_max - FRAME_OVERHEAD
    frames = [
        _publish_method(channel, message.exchange, message.routing_key),
        header_frame(channel, message, props, frame_max),
    ]
    frames += (
        pika.frame.Body(channel, body[at : at + body_max]).marshal()
        for at in range(0, len(body), body_max)
    )
    return b"".join(frames)


@functools.lru_cache(maxsize=1024)
def _publish_method(channel: int, exchange: str, routing_key: str) -> bytes:
    method = pika.spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True)
    marshalled: bytes = pika.frame.Method(channel, method).marshal()
    return marshalled


def marshalled_output(conn: object) -> Callable[[list[bytes]], None] | None:
    """pika's private writer of frames marshalled ahead, or None when this pika has none.

    Without it every message goes through the public ``basic_publish``: the
    same frames, one ``send()`` each, slower but correct (pyproject.toml bounds
    pika to the versions tested with the private writer).
    """
    output = getattr(conn, "_output_marshaled_frames", None)
    return output if callable(output) else None


def _encoding_error(exc: BaseException) -> str | None:
    if isinstance(exc, Unframeable):
        return str(exc)
    if isinstance(exc, pika.exceptions.ShortStringTooLong):
        name = bytes(exc.args[0][:40]).decode(errors="replace")
        return f"a name is over 255 bytes (an AMQP short string): {name!r}..."
    if isinstance(exc, pika.exceptions.UnsupportedAMQPFieldException):
        return f"AMQP headers cannot carry a {type(exc.args[-1]).__name__} value"
    return None


def describe(exc: BaseException) -> str:
    """One line for a pika exception; pika's own str() is often empty or a tuple."""
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "authentication failed (check the user name and password)"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return "access to the virtual host refused"
    # pika.adapters.utils.connection_workflow wraps the cause: a tuple of
    # attempts (`exceptions`) or the error of one bring-up phase (`exception`).
    errors = getattr(exc, "exceptions", None)
    if isinstance(errors, tuple) and errors and isinstance(errors[-1], BaseException):
        return describe(errors[-1])
    cause = getattr(exc, "exception", None)
    if isinstance(cause, BaseException):
        return describe(cause)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "AMQPConnectorStackTimeout":
        return "timed out"
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker | pika.exceptions.ChannelClosed):
        return f"closed by the broker: {exc.reply_code} {exc.reply_text}"
    encoding = _encoding_error(exc)
    if encoding is not None:
        return encoding
    if isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args:
        inner = exc.args[0]
        if isinstance(inner, BaseException):
            return describe(inner)
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
