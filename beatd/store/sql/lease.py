"""The leases: compare-and-set on one row per partition, timed by the database clock.

Each operation runs in a writing transaction (PostgreSQL row lock, SQLite
`BEGIN IMMEDIATE`), reads the database clock there and updates the row only
if it is still in the state the caller believes; two racing acquirers on an
expired lease therefore produce exactly one winner per epoch. Every acquire
advances the epoch; only a renew by the same process (its token) keeps it.

The `instances` table is the cluster's roll call: each process writes its
row (holder, token, last seen by the database clock) as it steps.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from beatd.errors import Fenced
from beatd.model import EPOCH, WHOLE, Instance, Lease, Partition
from beatd.store.sql import engine as eng
from beatd.store.sql.tables import instances, lease

ACQUIRE_LOCK = 0x62656174_6C656173  # "beatleas": PostgreSQL serialises acquires on it


def _row(partition: Partition) -> sa.ColumnElement[bool]:
    return lease.c.name == partition.lease_name


def _ensure_row(conn: Connection, partition: Partition) -> None:
    values = {
        "name": partition.lease_name,
        "holder": "",
        "epoch": 0,
        "expires_at": EPOCH,
        "token": "",
    }
    stmt = eng.insert_ignore(conn.dialect.name, lease).values(values)
    conn.execute(stmt)


def _lease(row: Any, partition: Partition) -> Lease | None:
    if row is None:
        return None
    return Lease(
        holder=row[0], epoch=int(row[1]), expires_at=row[2], token=row[3], partition=partition
    )


_RETURNING = (lease.c.holder, lease.c.epoch, lease.c.expires_at, lease.c.token)


def _held_by(current: Lease) -> sa.ColumnElement[bool]:
    return sa.and_(
        _row(current.partition), lease.c.token == current.token, lease.c.epoch == current.epoch
    )


def _foreign(partition: Partition) -> sa.ColumnElement[bool]:
    """Lease rows of another partitioning (another `partitions` setting)."""
    if partition.whole:
        return lease.c.name != partition.lease_name
    return lease.c.name.not_like(f"partition %/{partition.count}")


def acquire(
    conn: Connection, holder: str, ttl: timedelta, token: str, partition: Partition = WHOLE
) -> Lease | None:
    """Take `partition`'s lease if free or expired (or still ours), at a new epoch.

    The new epoch is past every lease row's, so epochs only grow across
    partitions too: after a change of P, rows claimed under the old
    partitioning are older than any term now and are claimed again. None
    while any instance holds a lease of another partitioning (an instance
    started with another `partitions`): two instances never decide one
    schedule under two leases, whatever their configuration. On PostgreSQL
    acquires queue on an advisory lock, so that check and the take are one
    step; SQLite's write lock already makes them so.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ACQUIRE_LOCK)))
    _ensure_row(conn, partition)
    now = eng.db_now(conn)
    others = sa.select(lease.c.name).where(
        _foreign(partition), lease.c.holder != "", lease.c.expires_at > now
    )
    if conn.execute(others.limit(1)).first() is not None:
        return None
    newest = sa.select(sa.func.max(lease.c.epoch)).scalar_subquery()
    # Our own unexpired row counts as free (we lost track of it, e.g. self-fenced),
    # but it still gets a new epoch: whatever the old term holds is stale.
    stmt = (
        sa.update(lease)
        .where(_row(partition), sa.or_(lease.c.expires_at <= now, lease.c.token == token))
        .values(holder=holder, token=token, epoch=newest + 1, expires_at=now + ttl)
        .returning(*_RETURNING)
    )
    return _lease(conn.execute(stmt).one_or_none(), partition)


def renew(conn: Connection, current: Lease, ttl: timedelta) -> Lease | None:
    now = eng.db_now(conn)
    stmt = (
        sa.update(lease)
        .where(_held_by(current), lease.c.expires_at > now)
        .values(expires_at=now + ttl)
        .returning(*_RETURNING)
    )
    return _lease(conn.execute(stmt).one_or_none(), current.partition)


def release(conn: Connection, current: Lease) -> None:
    now = eng.db_now(conn)
    conn.execute(
        sa.update(lease).where(_held_by(current), lease.c.expires_at > now).values(expires_at=now)
    )


def current(conn: Connection, partition: Partition = WHOLE) -> Lease | None:
    row = conn.execute(sa.select(*_RETURNING).where(_row(partition))).one_or_none()
    found = _lease(row, partition)
    if found is None or not found.holder or found.expires_at <= eng.db_now(conn):
        return None
    return found


def held(conn: Connection) -> list[Lease]:
    """Every unexpired lease, of any partitioning, by partition."""
    now = eng.db_now(conn)
    query = sa.select(lease.c.name, *_RETURNING).where(
        lease.c.holder != "", lease.c.expires_at > now
    )
    found = []
    for name, *row in conn.execute(query):
        partition = Partition.named(name)
        leased = _lease(row, partition) if partition is not None else None
        if leased is not None:
            found.append(leased)
    return sorted(found, key=lambda x: (x.partition.count, x.partition.index))


def check(conn: Connection, expected: Lease, *, lock: bool = True) -> datetime:
    """Verify the lease row is still `expected`'s; else raise Fenced.

    Returns the database clock's reading it judged expiry by.

    With `lock`, on PostgreSQL `FOR UPDATE` holds the row until commit, so a
    takeover waits for the caller's transaction; on SQLite `BEGIN IMMEDIATE`
    already holds the database's write lock. Without it (the relay's claim,
    a short statement) the check does not queue behind the tick's record
    transaction; a takeover committing in between is still safe, because the
    old leader stopped deciding a margin before its lease could expire.
    """
    # A leader frozen inside this transaction would keep the row lock, and so block
    # every takeover: on PostgreSQL the server ends it (engine.FROZEN_MS).
    query = sa.select(*_RETURNING, eng.now_expr(conn.dialect.name)).where(_row(expected.partition))
    row = conn.execute(query.with_for_update() if lock else query).one_or_none()
    found = _lease(row, expected.partition)
    if row is None or found is None:
        raise Fenced("lease lost: no lease row")
    # Under the lock, the clock is read again once the lock is granted, not before the wait.
    now = eng.db_now(conn) if lock else eng.as_utc(row[4])
    if found.token != expected.token or found.epoch != expected.epoch:
        raise Fenced(
            f"lease lost: held by {found.holder!r} at epoch {found.epoch}, "
            f"not {expected.holder!r} at epoch {expected.epoch}"
        )
    if found.expires_at <= now:
        late = (now - found.expires_at).total_seconds()
        raise Fenced(f"lease lost: epoch {found.epoch} expired {late:.3f}s ago (database clock)")
    return now


INSTANCE_FORGET = timedelta(hours=1)  # rows of processes silent this long are deleted


def heartbeat(conn: Connection, holder: str, token: str, leaving: bool) -> None:
    now = eng.db_now(conn)
    conn.execute(sa.delete(instances).where(instances.c.last_seen < now - INSTANCE_FORGET))
    if leaving:
        conn.execute(sa.delete(instances).where(instances.c.token == token))
        return
    seen = conn.execute(
        sa.update(instances)
        .where(instances.c.token == token)
        .values(holder=holder, last_seen=now)
        .returning(instances.c.token)
    ).one_or_none()
    if seen is None:
        values = {"token": token, "holder": holder, "started_at": now, "last_seen": now}
        conn.execute(eng.insert_ignore(conn.dialect.name, instances).values(values))


def seen_since(conn: Connection, since: datetime) -> list[Instance]:
    query = (
        sa.select(instances)
        .where(instances.c.last_seen >= since)
        .order_by(instances.c.started_at, instances.c.token)
    )
    return [
        Instance(row.holder, row.token, row.started_at, row.last_seen)
        for row in conn.execute(query)
    ]
