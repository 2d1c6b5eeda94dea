"""Partitions: each schedule and outbox row carries its name's bucket.

- schedules.bucket, outbox.bucket: model.bucket(name), a crc32 of the
  schedule's name modulo model.BUCKETS. Partition p of P is the rows with
  bucket % P == p, so P changes by a restart and no row is rewritten.
  Existing rows get their bucket here, computed in Python as beatd does.
- lease rows: P = 1 keeps the row named "leader"; P > 1 adds one row per
  partition ("partition 3/8") when first taken. No change of the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from beatd.model import bucket

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("schedules", "outbox"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("bucket", sa.Integer(), nullable=False, server_default="0"))
    conn = op.get_bind()
    for table, key in (("schedules", "name"), ("outbox", "schedule")):
        rows = sa.table(table, sa.column(key), sa.column("bucket"))
        names = sorted({name for (name,) in conn.execute(sa.select(rows.c[key]))})
        params = [{"b_name": name, "b_bucket": bucket(name)} for name in names]
        if params:
            conn.execute(
                sa.update(rows)
                .where(rows.c[key] == sa.bindparam("b_name"))
                .values(bucket=sa.bindparam("b_bucket")),
                params,
            )


def downgrade() -> None:
    for table in ("outbox", "schedules"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("bucket")
