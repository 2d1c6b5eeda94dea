"""What beatd puts on the AMQP wire: message properties, marshalled frames, error lines.

Frames are marshalled with pika's own classes, here rather than by
``basic_publish``: the relay prepares each fire's frames when the tick
records it, and the I/O thread writes a whole chunk as one buffer
(``basic_publish`` gives every frame its own ``send()``).
"""

from __future__ import annotations

import functools
import struct
from datetime import datetime

import pika
import pika.exceptions
import pika.frame
import pika.spec

from beatd.model import Message

FRAME_OVERHEAD = pika.spec.FRAME_HEADER_SIZE + pika.spec.FRAME_END_SIZE
PREPARED_CHANNEL = 1  # the confirm channel: the first one opened on every connection
PREPARED_BODY = pika.spec.FRAME_MIN_SIZE - FRAME_OVERHEAD  # fits any negotiated frame_max
ENCODE_ERRORS = (
    pika.exceptions.UnsupportedAMQPFieldException,
    pika.exceptions.ShortStringTooLong,
    struct.error,
    TypeError,
    ValueError,
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


def marshal(channel: int, message: Message, props: pika.BasicProperties, body_max: int) -> bytes:
    """The frames basic_publish would write (method, header, body), as one buffer."""
    body = message.body
    frames = [
        _publish_method(channel, message.exchange, message.routing_key),
        pika.frame.Header(channel, len(body), props).marshal(),
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
    if isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args:
        inner = exc.args[0]
        if isinstance(inner, BaseException):
            return describe(inner)
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
