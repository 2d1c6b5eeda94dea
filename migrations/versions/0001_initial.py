"""The first schema: schedules, fires, outbox, lease, changes.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from beatd.store.sql.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
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
    )
    op.create_index("ix_schedules_due", "schedules", ["paused", "next_at"])

    op.create_table(
        "fires",
        sa.Column("fire_id", sa.String(36), primary_key=True),
        sa.Column("schedule", sa.String(200), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("manual", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("epoch", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("schedule", "scheduled_for", name="uq_fires_schedule_instant"),
    )
    op.create_index("ix_fires_scheduled_for", "fires", ["scheduled_for"])

    op.create_table(
        "outbox",
        sa.Column("fire_id", sa.String(36), primary_key=True),
        sa.Column("publish_at", UTCDateTime(), nullable=False),
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
    )
    op.create_index("ix_outbox_publish_at", "outbox", ["publish_at"])

    op.create_table(
        "lease",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("changes")
    op.drop_table("lease")
    op.drop_index("ix_outbox_publish_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_fires_scheduled_for", table_name="fires")
    op.drop_table("fires")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_table("schedules")
