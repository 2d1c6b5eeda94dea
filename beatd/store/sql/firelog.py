"""The run history and the outbox: fenced, batched, one transaction per call.

On PostgreSQL the batch statements take whole columns as arrays (`unnest`,
`= ANY`): one short statement whatever the batch size, so neither
SQLAlchemy nor psycopg re-renders and re-parses a statement per batch (a
multi-row VALUES list cost more CPU than the database did). SQLite keeps
the portable multi-row forms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from beatd.model import (
    WHOLE,
    Advance,
    Decision,
    FireRecord,
    Lease,
    Message,
    Outcome,
    Partition,
    bucket,
)
from beatd.store.sql import engine as eng
from beatd.store.sql import lease as leases
from beatd.store.sql.tables import fires, outbox, schedules


def record(
    conn: Connection,
    held: Lease | None,
    decisions: Sequence[Decision],
    advances: Sequence[Advance],
) -> list[str]:
    now = leases.check(conn, held) if held is not None else eng.db_now(conn)
    skipped = _advance(conn, advances)
    kept = [d for d in decisions if d.schedule not in skipped]
    if not kept:
        return []
    dialect = conn.dialect.name
    epoch = held.epoch if held is not None else None
    if dialect == "postgresql":
        return _record_pg(conn, kept, now, epoch)
    rows = [
        {
            "fire_id": d.fire_id,
            "schedule": d.schedule,
            "scheduled_for": d.scheduled_for,
            "decided_at": now,
            "sent_at": None,
            "outcome": d.outcome.value,
            "reason": d.reason,
            "manual": d.manual,
            "epoch": epoch,
        }
        for d in kept
    ]
    stmt = eng.insert_ignore(dialect, fires).returning(fires.c.fire_id)
    written = list(conn.execute(stmt, rows).scalars())
    new = set(written)
    messages = [
        _outbox_row(d.message)
        for d in kept
        if d.fire_id in new and d.outcome is Outcome.PENDING and d.message is not None
    ]
    if messages:
        # RETURNING makes SQLAlchemy send multi-row INSERTs rather than a psycopg
        # pipelined executemany: a leader frozen mid-pipeline (no Sync sent) holds the
        # lease row with its session never idle, out of idle_in_transaction's reach.
        stmt = eng.insert_ignore(dialect, outbox).returning(outbox.c.fire_id)
        conn.execute(stmt, messages).all()
    return written


# psycopg placeholders, `%(x)b`: arrays go in binary format (no per-element quoting).
_PG_FIRES = (
    "INSERT INTO fires (fire_id, schedule, scheduled_for, decided_at, outcome, reason, manual,"
    " epoch) SELECT v.fire_id, v.schedule, v.scheduled_for, %(decided_at)s, v.outcome, v.reason,"
    " v.manual, %(epoch)s FROM unnest(CAST(%(fire_id)b AS text[]), CAST(%(schedule)b AS text[]),"
    " CAST(%(scheduled_for)b AS timestamptz[]), CAST(%(outcome)b AS text[]),"
    " CAST(%(reason)b AS text[]), CAST(%(manual)b AS boolean[]))"
    " AS v(fire_id, schedule, scheduled_for, outcome, reason, manual)"
    " ON CONFLICT DO NOTHING RETURNING fire_id"
)
_OUTBOX_COLUMNS = (
    ("fire_id", "text"),
    ("publish_at", "timestamptz"),
    ("schedule", "text"),
    ("scheduled_for", "timestamptz"),
    ("exchange", "text"),
    ("routing_key", "text"),
    ("body", "bytea"),
    ("content_type", "text"),
    ("content_encoding", "text"),
    ("headers", "json"),
    ("priority", "integer"),
    ("expires_at", "timestamptz"),
    ("queue", "text"),
    ("stamp", "bigint"),
    ("bucket", "integer"),
)
_PG_OUTBOX = (
    f"INSERT INTO outbox ({', '.join(name for name, _ in _OUTBOX_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(%({name})b AS {kind}[])" for name, kind in _OUTBOX_COLUMNS)
    + ") ON CONFLICT DO NOTHING"
)
_PG_ADVANCE = (
    "UPDATE schedules AS s SET next_at = v.next_at, last_at = v.last_at,"
    " fires = s.fires + v.added FROM unnest(CAST(%(name)b AS text[]),"
    " CAST(%(next_at)b AS timestamptz[]), CAST(%(last_at)b AS timestamptz[]),"
    " CAST(%(added)b AS bigint[])) AS v(name, next_at, last_at, added) WHERE s.name = v.name"
)


def _record_pg(
    conn: Connection, kept: Sequence[Decision], now: datetime, epoch: int | None
) -> list[str]:
    params: dict[str, Any] = {
        "decided_at": now,
        "epoch": epoch,
        "fire_id": [d.fire_id for d in kept],
        "schedule": [d.schedule for d in kept],
        "scheduled_for": [d.scheduled_for for d in kept],
        "outcome": [d.outcome.value for d in kept],
        "reason": [d.reason for d in kept],
        "manual": [d.manual for d in kept],
    }
    written = list(conn.exec_driver_sql(_PG_FIRES, params).scalars())
    new = set(written)
    messages = [
        d.message
        for d in kept
        if d.fire_id in new and d.outcome is Outcome.PENDING and d.message is not None
    ]
    if messages:
        rows = [_outbox_row(m) for m in messages]
        columns = {name: [row[name] for row in rows] for name, _ in _OUTBOX_COLUMNS}
        columns["headers"] = [json.dumps(h, separators=(",", ":")) for h in columns["headers"]]
        conn.exec_driver_sql(_PG_OUTBOX, columns)
    return written


def _advance(conn: Connection, advances: Sequence[Advance]) -> set[str]:
    """Apply version-checked advances; the names whose version moved."""
    if not advances:
        return set()
    dialect = conn.dialect.name
    wanted = {a.name: a.version for a in advances}
    current: dict[str, int] = {}
    names = sorted(wanted)  # lock in name order, as reconciliation updates
    for chunk in eng.chunks(names, dialect):
        query = (
            sa.select(schedules.c.name, schedules.c.version)
            .where(eng.in_list(schedules.c.name, chunk, dialect))
            .order_by(schedules.c.name)
            .with_for_update()
        )
        current.update((name, int(version)) for name, version in conn.execute(query).all())
    moved = {name for name, version in wanted.items() if current.get(name) != version}
    ahead = [a for a in sorted(advances, key=lambda a: a.name) if a.name not in moved]
    if ahead and dialect == "postgresql":
        conn.exec_driver_sql(
            _PG_ADVANCE,
            {
                "name": [a.name for a in ahead],
                "next_at": [a.next_at for a in ahead],
                "last_at": [a.last_at for a in ahead],
                "added": [a.fires_added for a in ahead],
            },
        )
        return moved
    params = [
        {
            "b_name": a.name,
            "b_next": a.next_at,
            "b_last": a.last_at,
            "b_added": a.fires_added,
        }
        for a in ahead
    ]
    if params:
        stmt = (
            sa.update(schedules)
            .where(schedules.c.name == sa.bindparam("b_name"))
            .values(
                next_at=sa.bindparam("b_next", type_=schedules.c.next_at.type),
                last_at=sa.bindparam("b_last", type_=schedules.c.last_at.type),
                fires=schedules.c.fires + sa.bindparam("b_added", type_=sa.BigInteger()),
            )
        )
        conn.execute(stmt, params)
    return moved


def withdraw(conn: Connection, names: Sequence[str], now: datetime) -> dict[str, datetime]:
    """Take back the fires of `names` recorded ahead, not due yet and not claimed.

    A change applies to them: their fire and outbox rows go (nothing of them
    was sent). A claimed fire is going out as recorded and stays; so does a
    manual one (a trigger is asked for, not decided). The DELETE itself checks
    `claimed IS NULL`, so a claim that commits first wins the race. Returns
    each name's earliest withdrawn instant, where a schedule whose timing did
    not change is decided again from.
    """
    dialect = conn.dialect.name
    earliest: dict[str, datetime] = {}
    count: dict[str, int] = {}
    manual = sa.exists().where(fires.c.fire_id == outbox.c.fire_id, fires.c.manual)
    for chunk in eng.chunks(names, dialect):
        stmt = (
            sa.delete(outbox)
            .where(
                eng.in_list(outbox.c.schedule, chunk, dialect),
                outbox.c.scheduled_for > now,
                outbox.c.claimed.is_(None),
                ~manual,
            )
            .returning(outbox.c.fire_id, outbox.c.schedule, outbox.c.scheduled_for)
        )
        gone = conn.execute(stmt).all()
        for ids in eng.chunks([fid for fid, _, _ in gone], dialect):
            conn.execute(sa.delete(fires).where(eng.in_list(fires.c.fire_id, ids, dialect)))
        for _, name, at in gone:
            earliest[name] = min(at, earliest.get(name, at))
            count[name] = count.get(name, 0) + 1
    _rewind(conn, count)
    return earliest


def _rewind(conn: Connection, withdrawn: dict[str, int]) -> None:
    """A schedule's last fire and fire count say what history still holds after a withdrawal."""
    latest = (
        sa.select(sa.func.max(fires.c.scheduled_for))
        .where(fires.c.schedule == schedules.c.name)
        .scalar_subquery()
    )
    for name, count in sorted(withdrawn.items()):  # few: fires recorded in the last seconds
        conn.execute(
            sa.update(schedules)
            .where(schedules.c.name == name)
            .values(
                last_at=latest,
                fires=sa.case((schedules.c.fires > count, schedules.c.fires - count), else_=0),
            )
        )


def _outbox_row(message: Message) -> dict[str, Any]:
    return {
        "fire_id": message.fire_id,
        "publish_at": message.publish_at,
        "schedule": message.schedule,
        "scheduled_for": message.scheduled_for,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "body": message.body,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": dict(message.headers),
        "priority": message.priority,
        "expires_at": message.expires_at,
        "queue": message.queue,
        "stamp": message.stamp,
        "bucket": bucket(message.schedule),
    }


def _unclaimed(epoch: int, partition: Partition) -> tuple[sa.ColumnElement[bool], ...]:
    """Not claimed in this term (never, or by an older one whose relay is gone), of `partition`.

    Epochs only grow, across every lease row (lease.acquire), so a row claimed
    under another partitioning (P changed) is older than any term now.
    """
    unclaimed = sa.or_(outbox.c.claimed.is_(None), outbox.c.claimed < epoch)
    if partition.whole:
        return (unclaimed,)
    return (unclaimed, outbox.c.bucket % partition.count == partition.index)


def claim(
    conn: Connection,
    held: Lease,
    through: datetime,
    limit: int,
    known: Mapping[str, tuple[int, Message]],
) -> list[Message]:
    leases.check(conn, held, lock=False)  # not behind the tick's record: claims are on time
    dialect = conn.dialect.name
    chosen = (
        sa.select(outbox.c.fire_id)
        .where(outbox.c.publish_at <= through, *_unclaimed(held.epoch, held.partition))
        .order_by(outbox.c.publish_at)  # the index's order: no sort of a crowded instant
        .limit(limit)
    )
    stmt = (
        sa.update(outbox)
        .where(outbox.c.fire_id.in_(chosen.scalar_subquery()))
        .values(claimed=held.epoch)
        .returning(outbox.c.fire_id, outbox.c.stamp)
    )
    messages: list[Message] = []
    unknown: list[str] = []
    for fire_id_, stamp in conn.execute(stmt).all():
        found = known.get(fire_id_)
        if found is not None and found[0] == stamp:
            messages.append(found[1])
        else:
            unknown.append(fire_id_)
    for chunk in eng.chunks(unknown, dialect):  # claimed: no change can touch these rows now
        query = sa.select(outbox).where(eng.in_list(outbox.c.fire_id, chunk, dialect))
        messages.extend(_message(row) for row in conn.execute(query))
    messages.sort(key=lambda m: (m.publish_at, m.fire_id))
    return messages


def _message(row: Any) -> Message:
    return Message(
        fire_id=row.fire_id,
        schedule=row.schedule,
        scheduled_for=row.scheduled_for,
        publish_at=row.publish_at,
        exchange=row.exchange,
        routing_key=row.routing_key,
        body=bytes(row.body),
        content_type=row.content_type,
        content_encoding=row.content_encoding,
        headers=row.headers,
        priority=row.priority,
        expires_at=row.expires_at,
        queue=row.queue,
    )


def next_publish_at(conn: Connection, epoch: int, partition: Partition = WHOLE) -> datetime | None:
    query = (
        sa.select(outbox.c.publish_at)
        .where(*_unclaimed(epoch, partition))
        .order_by(outbox.c.publish_at)
        .limit(1)
    )
    value: datetime | None = conn.execute(query).scalar_one_or_none()
    return value


def _settle(conn: Connection, fire_ids: Sequence[str], values: dict[str, object]) -> None:
    """Close pending fires (never overwrite one already settled) and drop their outbox rows."""
    dialect = conn.dialect.name
    for chunk in eng.chunks(list(dict.fromkeys(fire_ids)), dialect):
        conn.execute(
            sa.update(fires)
            .where(
                eng.in_list(fires.c.fire_id, chunk, dialect),
                fires.c.outcome == Outcome.PENDING.value,
            )
            .values(**values)
        )
        conn.execute(sa.delete(outbox).where(eng.in_list(outbox.c.fire_id, chunk, dialect)))


def mark_sent(conn: Connection, fire_ids: Sequence[str], sent_at: datetime) -> None:
    _settle(conn, fire_ids, {"outcome": Outcome.SENT.value, "sent_at": sent_at})


def mark_failed(conn: Connection, fire_id: str, reason: str, at: datetime) -> None:
    _settle(conn, [fire_id], {"outcome": Outcome.FAILED.value, "reason": reason, "sent_at": at})


def history(conn: Connection, schedule: str | None, limit: int) -> list[FireRecord]:
    query = sa.select(fires).order_by(fires.c.scheduled_for.desc(), fires.c.schedule).limit(limit)
    if schedule is not None:
        query = query.where(fires.c.schedule == schedule)
    return [_record(row) for row in conn.execute(query)]


def latest(conn: Connection, names: Sequence[str]) -> dict[str, FireRecord]:
    """The newest history row of each of `names` that has one (the unique index, per name)."""
    if not names:
        return {}
    newest = (
        sa.select(fires.c.schedule, sa.func.max(fires.c.scheduled_for).label("at"))
        .where(fires.c.schedule.in_(names))
        .group_by(fires.c.schedule)
        .subquery()
    )
    query = sa.select(fires).join(
        newest, sa.and_(fires.c.schedule == newest.c.schedule, fires.c.scheduled_for == newest.c.at)
    )
    return {row.schedule: _record(row) for row in conn.execute(query)}


def _record(row: Any) -> FireRecord:
    return FireRecord(
        fire_id=row.fire_id,
        schedule=row.schedule,
        scheduled_for=row.scheduled_for,
        outcome=Outcome(row.outcome),
        decided_at=row.decided_at,
        reason=row.reason,
        sent_at=row.sent_at,
        manual=bool(row.manual),
        epoch=row.epoch,
    )


def lags(conn: Connection, limit: int) -> list[float]:
    """Computed in the database: a row is one number, not three decoded instants."""
    late: sa.ColumnElement[Any]
    if conn.dialect.name == "postgresql":
        late = sa.func.extract("epoch", fires.c.sent_at - fires.c.scheduled_for)
    else:  # julianday() keeps milliseconds
        late = (
            sa.func.julianday(fires.c.sent_at) - sa.func.julianday(fires.c.scheduled_for)
        ) * 86400
    query = (
        sa.select(late)
        .where(
            fires.c.outcome == Outcome.SENT.value,
            fires.c.manual == sa.false(),
            fires.c.reason.is_(None),
            fires.c.sent_at.is_not(None),
        )
        .order_by(fires.c.scheduled_for.desc())
        .limit(limit)
    )
    return [float(value) for value in conn.execute(query).scalars()]


def backlog(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one())


def backlogs(conn: Connection, count: int) -> list[int]:
    """The outbox's rows in each partition of `count`, in one scan.

    The modulus is a literal: PostgreSQL groups by `bucket % 4`, not by two
    placeholders it cannot tell are equal. P = 1 is today's count, no grouping.
    """
    if count == 1:
        return [backlog(conn)]
    part = outbox.c.bucket % sa.literal_column(str(int(count)))
    rows = conn.execute(sa.select(part, sa.func.count()).group_by(part)).all()
    found: dict[int, int] = {int(index): int(n) for index, n in rows}
    return [found.get(index, 0) for index in range(count)]
