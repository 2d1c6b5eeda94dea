"""The only place fire ids are made.

A fire id is a UUIDv5 of the schedule name and the scheduled UTC instant, so
the same fire always gets the same id on every instance and after every
restart: it is the outbox key, the AMQP message_id and the Celery task id.

    fire_id(name, instant) == str(uuid.uuid5(NAMESPACE, f"{name}\\x00{stamp}"))
    stamp = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

It is computed for every fire, so it is spelled out by hand (sha1 of the
namespace bytes and the name, version and variant bits set) rather than
through `uuid.uuid5` and `strftime`, at a quarter of their cost; the tests
hold it to the definition above.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

NAMESPACE = uuid.UUID("6f0c4f3e-4b8e-5d55-9a57-2f1b6f1f7b3a")

_PREFIX = hashlib.sha1(NAMESPACE.bytes)  # uuid5 hashes the namespace bytes first
# The hex digit that holds the variant bits (10xx), by the digest's digit there.
_VARIANT = {f"{n:x}": f"{8 | n & 3:x}" for n in range(16)}


def fire_id(schedule: str, instant: datetime) -> str:
    """Deterministic id of the fire of `schedule` at `instant` (aware)."""
    if instant.tzinfo is None:
        raise ValueError("fire_id needs an aware datetime")
    u = instant if instant.tzinfo is UTC else instant.astimezone(UTC)
    if u.year < 1000:  # strftime does not pad %Y below 1000 on every platform
        stamp = u.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    else:
        stamp = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 (the fastest)
            u.year,
            u.month,
            u.day,
            u.hour,
            u.minute,
            u.second,
            u.microsecond,
        )
    sha = _PREFIX.copy()
    sha.update(f"{schedule}\x00{stamp}".encode())
    x = sha.hexdigest()
    # UUID fields 8-4-4-4-12, the version digit 5 and the variant bits in place.
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"
