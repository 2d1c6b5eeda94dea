"""What a publisher must do, and what it answers (the Message it is handed is in model.py).

Messages are built once, when their fire is recorded, and stored in the
outbox as they are; the publisher sends them verbatim. The AMQP publisher and
the stdout publisher pass the same contract tests.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from beatd.model import Message


class Status(enum.StrEnum):
    CONFIRMED = "confirmed"  # broker ack: mark sent
    RETURNED = "returned"  # unroutable (mandatory): mark failed with reason
    NACKED = "nacked"  # broker refused: leave in the outbox, retry later
    EXPIRED = "expired"  # expires_at passed before it could be sent: mark failed
    FAILED = "failed"  # cannot be sent at all (not encodable, or over frame_max): mark failed


@dataclass(frozen=True, slots=True)
class Result:
    fire_id: str
    status: Status
    reason: str | None = None


class Publisher(Protocol):
    def publish(self, messages: Sequence[Message], now: datetime) -> list[Result]:
        """Send persistent messages with publisher confirms, in order.

        Blocks until every message is confirmed, returned or nacked and
        returns one Result per message. Raises BrokerError when the
        connection fails mid-batch: the caller keeps the batch in the outbox
        and retries (at-least-once; the fire id deduplicates).
        """
        ...

    def prepare(self, messages: Sequence[Message]) -> None:
        """Encode ahead messages that publish() will get later, off its critical path.

        A speed-up only: publish() sends the same messages whether or not
        they were prepared. Called from the publishing thread.
        """
        ...

    def check(self) -> str | None:
        """None when the broker is reachable, else one line saying why not."""
        ...

    def close(self) -> None: ...
