"""Outbox pages keep room for every row's claim: fillfactor 35 on PostgreSQL.

A claim sets `claimed`, a column no index covers, so it can be a HOT update
(no new index entries) when the row's page has room for the new version.
An outbox row is ~700 bytes: at 0002's fillfactor 70 a page had room for
three of its ~eight rows, and 38% of claims were HOT (measured at 100,000
schedules); at 35 every claim is (measured: 362 rows an instant, 80
instants). The outbox holds only the seconds ahead, so the room costs a few
megabytes, and fewer index entries to step over keep the claim's index scan
short until autovacuum comes by.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE outbox SET (fillfactor = 35)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE outbox SET (fillfactor = 70)")
