"""Publishers: the Protocol, the message builder, and a factory by URL scheme.

Importing this package does not import pika: ``tick.py`` and ``relay.py``
import the Protocol from here, and only ``open_publisher`` with an
``amqp://`` URL loads the AMQP adapter.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from beatd.errors import ConfigError
from beatd.model import Message
from beatd.publish.base import Publisher, Result, Status
from beatd.publish.messages import build_message, message_from_json, message_to_json
from beatd.publish.retry import RetryPolicy
from beatd.redact import redact

__all__ = [
    "Message",
    "Publisher",
    "Result",
    "RetryPolicy",
    "Status",
    "build_message",
    "message_from_json",
    "message_to_json",
    "open_publisher",
]


def open_publisher(url: str) -> Publisher:
    """A publisher for `url`: ``stdout://``, ``amqp://`` or ``amqps://``.

    Connects lazily, so this never touches the network. Raises ConfigError
    naming the scheme (with the password masked) for anything else.
    """
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ConfigError(f"invalid broker URL {redact(url)!r}: {exc}") from None
    if scheme == "stdout":
        from beatd.publish.stdout import StdoutPublisher

        return StdoutPublisher()
    if scheme in ("amqp", "amqps"):
        from beatd.publish.amqp import AmqpPublisher

        return AmqpPublisher(url)
    raise ConfigError(
        f"unsupported broker URL scheme {scheme!r} in {redact(url)!r}: "
        "expected stdout://, amqp:// or amqps://"
    )
