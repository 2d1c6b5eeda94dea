"""The beatd schema, in SQLAlchemy Core; migrations/ must produce exactly this.

Every instant is stored as UTC through `UTCDateTime`: PostgreSQL keeps it in
a timestamptz, SQLite as naive UTC text (it has no time zones), and both come
back aware. The due query reads `ix_schedules_due` (paused, next_at), so it
touches only due rows whatever the number of schedules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; a naive one is refused (it is a bug)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; beatd stores UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # written by SQL (the db clock), not by this type
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("source", sa.String(8), nullable=False),
    # The codec table (schedule_to_table): the whole definition, self-contained.
    sa.Column("definition", sa.JSON(), nullable=False),
    # sha256 of the canonical definition JSON: reconciliation compares this.
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("spec", sa.Text(), nullable=False),
    # Canonical text of the fields that decide instants (spec, zone, start,
    # end, enabled): when it changes, next_at is recomputed.
    sa.Column("timing", sa.Text(), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("pause_note", sa.Text(), nullable=True),
    sa.Column("next_at", UTCDateTime(), nullable=True),
    sa.Column("last_at", UTCDateTime(), nullable=True),
    sa.Column("fires", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # model.bucket(name), written with the row: partition p of P is bucket % P == p.
    sa.Column("bucket", sa.Integer(), nullable=False, server_default="0"),
    sa.Index("ix_schedules_due", "paused", "next_at"),
)

fires = sa.Table(
    "fires",
    metadata,
    sa.Column("fire_id", sa.String(36), primary_key=True),
    sa.Column("schedule", sa.String(200), nullable=False),
    sa.Column("scheduled_for", UTCDateTime(), nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("manual", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("epoch", sa.BigInteger(), nullable=True),
    # Also the index of a schedule's history, newest first.
    sa.UniqueConstraint("schedule", "scheduled_for", name="uq_fires_schedule_instant"),
    sa.Index("ix_fires_scheduled_for", "scheduled_for"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("fire_id", sa.String(36), primary_key=True),
    sa.Column("publish_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("schedule", sa.String(200), nullable=False),
    sa.Column("scheduled_for", UTCDateTime(), nullable=False),
    sa.Column("exchange", sa.String(255), nullable=False),
    sa.Column("routing_key", sa.String(255), nullable=False),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("content_encoding", sa.String(50), nullable=False),
    sa.Column("headers", sa.JSON(), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("queue", sa.String(255), nullable=True),
    # The epoch whose relay took it to publish; NULL until then. A change withdraws
    # only unclaimed fires: a claimed one is going out as recorded.
    sa.Column("claimed", sa.BigInteger(), nullable=True),
    # Message.stamp of the object the row was written from: a claim returns it, so
    # the relay uses the message it already holds only when it is that object.
    sa.Column("stamp", sa.BigInteger(), nullable=False, server_default="0"),
    # The schedule's bucket, copied at record: a partition's relay claims only its own.
    sa.Column("bucket", sa.Integer(), nullable=False, server_default="0"),
)

lease = sa.Table(
    "lease",
    metadata,
    # model.Partition.lease_name: "leader" for P = 1, "partition 3/8" for each of P > 1.
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    # A nonce per process: two processes sharing a holder name never share an epoch.
    sa.Column("token", sa.String(64), nullable=False, server_default=""),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("token", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
)

changes = sa.Table(
    "changes",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("counter", sa.BigInteger(), nullable=False),
)

TABLE_NAMES = tuple(metadata.tables)
