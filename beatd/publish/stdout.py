"""The ``stdout://`` publisher: one JSON line per message, every one confirmed.

The twin of the AMQP publisher (it passes the same contract tests): it
honours ``expires_at`` exactly as the broker adapter does, so a message
already expired is reported EXPIRED and not printed. It cannot know whether
a consumer would route the message, so it never returns RETURNED.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

from beatd.errors import BrokerError
from beatd.model import Message
from beatd.publish.base import Result, Status
from beatd.publish.messages import expired_reason, iso_z


class StdoutPublisher:
    def __init__(self, stream: IO[str] | None = None) -> None:
        # Resolved at call time so pytest's capsys and redirections are honoured.
        self._stream = stream
        self._lock = threading.Lock()

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stdout

    def publish(self, messages: Sequence[Message], now: datetime) -> list[Result]:
        """Print each unexpired message as one JSON line, in order; flush once."""
        results: list[Result] = []
        lines: list[str] = []
        for message in messages:
            if message.expires_at is not None and message.expires_at <= now:
                results.append(Result(message.fire_id, Status.EXPIRED, expired_reason(message)))
                continue
            lines.append(_line(message))
            results.append(Result(message.fire_id, Status.CONFIRMED))
        if not lines:
            return results
        with self._lock:
            try:
                stream = self.stream
                for line in lines:
                    stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError) as exc:  # ValueError: I/O on a closed file
                raise BrokerError(f"stdout publisher cannot write: {exc}") from None
        return results

    def prepare(self, messages: Sequence[Message]) -> None:
        pass  # a line of JSON costs nothing worth doing ahead

    def check(self) -> str | None:
        return "stdout is closed" if self.stream.closed else None

    def close(self) -> None:
        """Nothing to release: the stream belongs to the caller."""


def _line(message: Message) -> str:
    body: Any
    try:
        body = json.loads(message.body.decode(message.content_encoding or "utf-8"))
    except (UnicodeDecodeError, LookupError, ValueError):
        body = message.body.decode("utf-8", errors="replace")
    record: dict[str, Any] = {
        "fire_id": message.fire_id,
        "schedule": message.schedule,
        "scheduled_for": iso_z(message.scheduled_for),
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "headers": dict(message.headers),
        "body": body,
    }
    if message.priority is not None:
        record["priority"] = message.priority
    if message.expires_at is not None:
        record["expires_at"] = iso_z(message.expires_at)
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
