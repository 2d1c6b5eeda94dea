"""Outbox claims, per-process lease tokens, the instances seen by the cluster.

- outbox.stamp: the Message.stamp the row was written from (a claim returns it).
- outbox.claimed: the lease epoch whose relay took the message to publish it.
  A change withdraws only unclaimed fires: a claimed one is going out, and
  is recorded as sent as it was sent.
- lease.token: a per-process nonce beside the configured holder name, so two
  processes sharing an `instance_id` never share an epoch.
- instances: every running process (leader and standbys) and when it was last seen.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from beatd.store.sql.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("stamp", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("lease") as batch:
        batch.add_column(sa.Column("token", sa.String(64), nullable=False, server_default=""))
    if op.get_bind().dialect.name == "postgresql":
        # Room on each page, so a claim (setting a column no index covers) is a HOT
        # update: no new index entries for each fire claimed.
        op.execute("ALTER TABLE outbox SET (fillfactor = 70)")
    op.create_table(
        "instances",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("instances")
    with op.batch_alter_table("lease") as batch:
        batch.drop_column("token")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("stamp")
        batch.drop_column("claimed")
