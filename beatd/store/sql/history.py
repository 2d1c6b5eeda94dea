"""Run history retention: delete settled fire rows, a bounded batch per transaction.

Two reasons a row goes, oldest first: its instant is older than the
retention cut-off (`[beatd] keep_history`), or it is beyond its schedule's
`history_limit` (that many newest rows stay). A pending fire (outcome
pending, its message in the outbox) never goes. The age pass walks
`ix_fires_scheduled_for` from the oldest row; the cap pass reads which
schedules set a limit from their stored definitions (in a reading
transaction: on SQLite a writing one would hold up the tick), then finds
each one's cut-off row on the (schedule, scheduled_for) unique index.

Deleted rows leave dead tuples on PostgreSQL until a VACUUM; autovacuum
does that by default, but where it is switched off the table would grow
for ever under steady pruning. So, with autovacuum off, beatd vacuums the
history table itself after a round, by autovacuum's own rule: once more
than 50 rows plus a fifth of the table were deleted since the last time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from beatd.model import Outcome
from beatd.store.sql import engine as eng
from beatd.store.sql.tables import fires, schedules

_SETTLED = fires.c.outcome != Outcome.PENDING.value
_LIMIT_KEY = "history_limit"
VACUUM_BASE = 50  # autovacuum_vacuum_threshold's default
VACUUM_FRACTION = 0.2  # autovacuum_vacuum_scale_factor's default


def prune_expired(conn: Connection, before: datetime, limit: int) -> int:
    """Delete at most `limit` settled rows older than `before`, oldest first."""
    expired = (
        sa.select(fires.c.fire_id)
        .where(fires.c.scheduled_for < before, _SETTLED)
        .order_by(fires.c.scheduled_for)
        .limit(limit)
    )
    ids = list(conn.execute(expired).scalars())
    _delete(conn, ids)
    return len(ids)


def capped(conn: Connection) -> list[tuple[str, int]]:
    """(name, history_limit) of every schedule that sets one.

    It reads every definition (0.3 s at 100,000 schedules on SQLite): call
    it in a reading transaction, which holds up no writer.
    """
    cap: Any = schedules.c.definition[_LIMIT_KEY].as_integer()
    query = sa.select(schedules.c.name, cap).where(cap.is_not(None)).order_by(schedules.c.name)
    return [(str(name), int(keep)) for name, keep in conn.execute(query).all()]


def prune_over_limit(conn: Connection, caps: Sequence[tuple[str, int]], limit: int) -> int:
    """Delete at most `limit` settled rows beyond their schedule's history_limit."""
    ids: list[str] = []
    for name, keep in caps:
        room = limit - len(ids)
        if room <= 0:
            break
        if len(ids) >= room:
            break
        newest_kept = (
            sa.select(fires.c.scheduled_for)
            .where(fires.c.schedule == name)
            .order_by(fires.c.scheduled_for.desc())
            .offset(keep - 1)
            .limit(1)
            .scalar_subquery()
        )
        over = (
            sa.select(fires.c.fire_id)
            .where(fires.c.schedule == name, fires.c.scheduled_for < newest_kept, _SETTLED)
            .order_by(fires.c.scheduled_for)
            .limit(room)
        )
        ids += conn.execute(over).scalars()
    _delete(conn, ids)
    return len(ids)


def _delete(conn: Connection, ids: Sequence[str]) -> None:
    dialect = conn.dialect.name
    for chunk in eng.chunks(ids, dialect):
        conn.execute(sa.delete(fires).where(eng.in_list(fires.c.fire_id, chunk, dialect)))


def needs_vacuum(conn: Connection, deleted: int) -> bool:
    """True when, with autovacuum off (PostgreSQL), `deleted` rows call for a VACUUM."""
    if deleted <= VACUUM_BASE:
        return False
    if conn.exec_driver_sql("SELECT current_setting('autovacuum')").scalar_one() == "on":
        return False  # the server does it (and the operator tuned it)
    rows = conn.exec_driver_sql(
        "SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'fires'::regclass"
    ).scalar_one()
    return deleted > VACUUM_BASE + VACUUM_FRACTION * float(rows)


def vacuum(conn: Connection) -> None:
    """VACUUM the history table: its deleted rows' space is reused (outside a transaction)."""
    conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(f"VACUUM {fires.name}")
