"""Run history retention: delete settled fire rows, a bounded batch per transaction.

Two reasons a row goes, oldest first: its instant is older than the
retention cut-off (`[beatd] keep_history`), or it is beyond its schedule's
`history_limit` (that many newest rows stay). A pending fire (outcome
pending, its message in the outbox) never goes. The age pass walks
`ix_fires_scheduled_for` from the oldest row; the cap pass reads which
schedules set a limit from their stored definitions, then finds each one's
cut-off row on the (schedule, scheduled_for) unique index.
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


def prune(conn: Connection, before: datetime, limit: int) -> int:
    """Delete at most `limit` settled rows: expired ones first, then those over a cap."""
    expired = (
        sa.select(fires.c.fire_id)
        .where(fires.c.scheduled_for < before, _SETTLED)
        .order_by(fires.c.scheduled_for)
        .limit(limit)
    )
    ids = list(conn.execute(expired).scalars())
    if len(ids) < limit:  # the age pass is done: the caps get the rest of the batch
        ids += _over_limit(conn, limit - len(ids))
    _delete(conn, ids)
    return len(ids)


def _over_limit(conn: Connection, room: int) -> list[str]:
    """Ids of settled rows beyond their schedule's history_limit, at most `room`."""
    cap: Any = schedules.c.definition[_LIMIT_KEY].as_integer()
    capped = conn.execute(
        sa.select(schedules.c.name, cap).where(cap.is_not(None)).order_by(schedules.c.name)
    ).all()
    ids: list[str] = []
    for name, keep in capped:
        if len(ids) >= room:
            break
        newest_kept = (
            sa.select(fires.c.scheduled_for)
            .where(fires.c.schedule == name)
            .order_by(fires.c.scheduled_for.desc())
            .offset(int(keep) - 1)
            .limit(1)
            .scalar_subquery()
        )
        over = (
            sa.select(fires.c.fire_id)
            .where(fires.c.schedule == name, fires.c.scheduled_for < newest_kept, _SETTLED)
            .order_by(fires.c.scheduled_for)
            .limit(room - len(ids))
        )
        ids += conn.execute(over).scalars()
    return ids


def _delete(conn: Connection, ids: Sequence[str]) -> None:
    dialect = conn.dialect.name
    for chunk in eng.chunks(ids, dialect):
        conn.execute(sa.delete(fires).where(eng.in_list(fires.c.fire_id, chunk, dialect)))
