"""The only place fire ids are made.

A fire id is a UUIDv5 of the schedule name and the scheduled UTC instant, so
the same fire always gets the same id on every instance and after every
restart: it is the outbox key, the AMQP message_id and the Celery task id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

NAMESPACE = uuid.UUID("6f0c4f3e-4b8e-5d55-9a57-2f1b6f1f7b3a")


def fire_id(schedule: str, instant: datetime) -> str:
    """Deterministic id of the fire of `schedule` at `instant` (aware)."""
    if instant.tzinfo is None:
        raise ValueError("fire_id needs an aware datetime")
    stamp = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(uuid.uuid5(NAMESPACE, f"{schedule}\x00{stamp}"))
