"""Schedule rows: definitions (the codec table), run state and reconciliation.

A definition is stored as the codec's self-contained table plus its digest;
`timing` is the canonical text of the keys that decide instants, so
reconciliation can tell "options changed" (keep run state) from "timing
changed" (recompute next_at) without decoding a single definition.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from beatd import codec
from beatd.errors import AlreadyExists, Conflict, NotFound
from beatd.model import (
    UTC_ZONE,
    WHOLE,
    Format,
    Partition,
    Schedule,
    ScheduleFilter,
    SchedulePage,
    Source,
    StoredSchedule,
    ascii_lower,
    bucket,
)
from beatd.store import check_unique
from beatd.store.base import NextAt, ReconcileResult, first_version
from beatd.store.sql import engine as eng
from beatd.store.sql import firelog
from beatd.store.sql.tables import changes, schedules

CHANNEL = "beatd_changes"
"""PostgreSQL NOTIFY channel of the change signal."""

DEFINITIONS_LOCK = 0x62656174  # "beat": serialises definition writers on PostgreSQL

_READ_DEFAULTS = codec.Defaults(timezone=UTC_ZONE, format=Format.CELERY)
_TIMING_KEYS = ("cron", "every", "anchor", "rrule", "at", "timezone", "start", "end", "enabled")
_SPEC_KEYS = ("cron", "every", "rrule", "at")
_CHUNK = 500
_LOAD_CHUNK = 2000  # schedules per step of load_file: bounded memory, few round trips
_T = TypeVar("_T")


class Row(NamedTuple):
    """What reconciliation compares, per existing schedule."""

    source: str
    digest: str
    timing: str


def definition_columns(schedule: Schedule) -> dict[str, Any]:
    """The definition columns of a schedule (no run state)."""
    table = codec.schedule_to_table(schedule)
    canonical = json.dumps(table, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    timing = {key: table[key] for key in _TIMING_KEYS if key in table}
    spec = next(str(table[key]) for key in _SPEC_KEYS if key in table)
    if "anchor" in table:
        spec += f" from {table['anchor']}"
    return {
        "source": schedule.source.value,
        "definition": table,
        "digest": hashlib.sha256(canonical.encode()).hexdigest(),
        "kind": schedule.kind,
        "spec": spec,
        "timing": json.dumps(timing, sort_keys=True, separators=(",", ":")),
        "timezone": schedule.timezone.key,
    }


def _locked(conn: Connection, names: Sequence[str]) -> None:
    """Lock the rows of `names` before withdrawing their fires.

    A tick recording at this moment holds these rows (it locked them to check
    their versions): the change waits for its commit, so the withdrawal that
    follows sees the fires it wrote, and a tick that comes later fails the
    version check. Withdrawing first let a fire recorded just then survive a
    pause that returned seconds before its instant (the change's DELETE did
    not see it). SQLite's write lock already orders the two.
    """
    dialect = conn.dialect.name
    for chunk in eng.chunks(sorted(names), dialect):
        query = (
            sa.select(schedules.c.name)
            .where(eng.in_list(schedules.c.name, chunk, dialect))
            .order_by(schedules.c.name)
            .with_for_update()
        )
        conn.execute(query).all()


def lock_definitions(conn: Connection) -> None:
    """Serialise definition writers (SQLite: BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(DEFINITIONS_LOCK)))


def bump(conn: Connection) -> None:
    """Move the change counter (and NOTIFY on PostgreSQL, delivered at commit)."""
    conn.execute(eng.insert_ignore(conn.dialect.name, changes).values(id=1, counter=0))
    conn.execute(sa.update(changes).where(changes.c.id == 1).values(counter=changes.c.counter + 1))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, "")))


def change_count(conn: Connection) -> int:
    value = conn.execute(sa.select(changes.c.counter).where(changes.c.id == 1)).scalar()
    return int(value or 0)


def _stored(row: Any) -> StoredSchedule:
    schedule = codec.schedule_from_table(
        row.name, row.definition, _READ_DEFAULTS, Source(row.source), stored=True
    )
    return _with_run_state(schedule, row)


def _with_run_state(schedule: Schedule, row: Any) -> StoredSchedule:
    return StoredSchedule(
        schedule=schedule,
        next_at=row.next_at,
        last_at=row.last_at,
        fires=int(row.fires),
        paused=bool(row.paused),
        note=row.pause_note,
        version=int(row.version),
        created_at=row.created_at,
    )


def get(conn: Connection, name: str) -> StoredSchedule:
    row = conn.execute(sa.select(schedules).where(schedules.c.name == name)).one_or_none()
    if row is None:
        raise NotFound(f"no schedule named {name!r}")
    return _stored(row)


def all_(conn: Connection) -> list[StoredSchedule]:
    return [_stored(row) for row in conn.execute(sa.select(schedules).order_by(schedules.c.name))]


def page(conn: Connection, where: ScheduleFilter, offset: int, limit: int) -> SchedulePage:
    """A page by name, filtered in the database; only the page's rows are read whole.

    The names come first (the primary key index, so a deep page skips index
    entries, not rows with their definitions), then those rows and their
    newest history rows.
    """
    condition = _matching(where, conn.dialect.name)
    total = conn.execute(sa.select(sa.func.count()).select_from(schedules).where(condition))
    names = sa.select(schedules.c.name).where(condition).order_by(schedules.c.name)
    shown_names = list(conn.execute(names.offset(max(offset, 0)).limit(max(limit, 0))).scalars())
    rows = sa.select(schedules).where(schedules.c.name.in_(shown_names)).order_by(schedules.c.name)
    shown = tuple(_stored(row) for row in conn.execute(rows)) if shown_names else ()
    return SchedulePage(shown, int(total.scalar_one()), firelog.latest(conn, shown_names))


_DISABLED = '%"enabled":false%'
"""How `timing` (canonical JSON, see definition_columns) spells a disabled schedule: a text
test costs a third of reading `enabled` out of every row's JSON definition."""


def _matching(where: ScheduleFilter, dialect: str) -> sa.ColumnElement[bool]:
    """`where` in SQL: the name part, the source and the state as StoredSchedule.state says."""
    parts: list[sa.ColumnElement[bool]] = [sa.true()]
    if where.text:
        part = "%" + where.text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
        if dialect == "sqlite":  # LIKE ignores the case of ASCII letters
            parts.append(schedules.c.name.like(part, escape="/"))
        else:  # lower() in the C collation: ASCII letters only, as on SQLite, and faster
            name = sa.func.lower(sa.collate(schedules.c.name, "C"))
            parts.append(name.like(ascii_lower(part), escape="/"))
    if where.source is not None:
        parts.append(schedules.c.source == where.source)
    if where.state is not None:
        unpaused = schedules.c.paused == sa.false()
        disabled = schedules.c.timing.like(_DISABLED)
        running = sa.and_(unpaused, sa.not_(disabled))
        parts.append(
            {
                "paused": schedules.c.paused == sa.true(),
                "disabled": sa.and_(unpaused, disabled),
                "finished": sa.and_(running, schedules.c.next_at.is_(None)),
                "active": sa.and_(running, schedules.c.next_at.is_not(None)),
            }.get(where.state, sa.false())
        )
    return sa.and_(*parts)


Decoded = dict[str, tuple[int, Schedule]]
"""Definitions already decoded: name -> (digest, schedule), for every schedule the leader runs.

The digest is kept as an int (64 bytes, not 113 as hex text) and the source
is read off the schedule: with 100,000 schedules each byte per entry is 0.1 MB.
"""


def _digest(hexdigest: str) -> int:
    return int(hexdigest, 16)


_RUN_STATE = [
    schedules.c[name]
    for name in (
        "name", "source", "digest", "next_at", "last_at", "fires", "paused", "pause_note",
        "version", "created_at",
    )
]  # fmt: skip
MAX_DECODED = 200_000  # past this many names (churn), the cache starts over


def _due_by(now: datetime, partition: Partition = WHOLE) -> sa.ColumnElement[bool]:
    """Unpaused with next_at <= now: the due query, its EXPLAIN twin and the count agree."""
    return sa.and_(
        schedules.c.paused == sa.false(), schedules.c.next_at <= now, *in_partition(partition)
    )


def in_partition(partition: Partition) -> tuple[sa.ColumnElement[bool], ...]:
    """The rows of `partition`: nothing at all for P = 1, so its queries are as before."""
    if partition.whole:
        return ()
    return (schedules.c.bucket % partition.count == partition.index,)


def due(
    conn: Connection,
    now: datetime,
    limit: int,
    decoded: Decoded | None = None,
    partition: Partition = WHOLE,
) -> list[StoredSchedule]:
    """Due schedules, earliest first; `decoded` spares re-reading unchanged definitions.

    The leader reads the same schedules over and over: with the cache, a
    due row is its run state plus a digest, and only new or changed
    definitions are read and decoded (a second query, by name).
    """
    order = (schedules.c.next_at, schedules.c.name)
    due_now = _due_by(now, partition)
    if decoded is None:
        query = sa.select(schedules).where(due_now).order_by(*order).limit(limit)
        return [_stored(row) for row in conn.execute(query).all()]
    rows = conn.execute(sa.select(*_RUN_STATE).where(due_now).order_by(*order).limit(limit)).all()
    stale = [row.name for row in rows if not _fresh(decoded.get(row.name), row)]
    if stale:
        if len(decoded) + len(stale) > MAX_DECODED:
            decoded.clear()
        dialect = conn.dialect.name
        for chunk in eng.chunks(stale, dialect):
            query = sa.select(
                schedules.c.name, schedules.c.digest, schedules.c.source, schedules.c.definition
            )
            for row in conn.execute(query.where(eng.in_list(schedules.c.name, chunk, dialect))):
                schedule = codec.schedule_from_table(
                    row.name, row.definition, _READ_DEFAULTS, Source(row.source), stored=True
                )
                decoded[row.name] = (_digest(row.digest), schedule)
    return [_with_run_state(decoded[row.name][1], row) for row in rows if row.name in decoded]


def _fresh(entry: tuple[int, Schedule] | None, row: Any) -> bool:
    """Whether a cached decoding still is the row's definition (same digest and source)."""
    return entry is not None and entry[1].source == row.source and entry[0] == _digest(row.digest)


def due_query(now: datetime, limit: int) -> sa.Select[Any]:
    """The due query, for EXPLAIN tests."""
    return (
        sa.select(schedules.c.name).where(_due_by(now)).order_by(schedules.c.next_at).limit(limit)
    )


def due_count(conn: Connection, now: datetime, cap: int, partition: Partition = WHOLE) -> int:
    """How many rows the due query would return, up to `cap` (an index-only range)."""
    ids = sa.select(schedules.c.next_at).where(_due_by(now, partition)).limit(cap).subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(ids)).scalar_one())


def next_due_at(conn: Connection, partition: Partition = WHOLE) -> datetime | None:
    query = (
        sa.select(schedules.c.next_at)
        .where(
            schedules.c.paused == sa.false(),
            schedules.c.next_at.is_not(None),
            *in_partition(partition),
        )
        .order_by(schedules.c.next_at)
        .limit(1)
    )
    value: datetime | None = conn.execute(query).scalar_one_or_none()
    return value


def _owned_by_file(name: str) -> Conflict:
    return Conflict(
        f"schedule {name!r} is defined in the config file; edit the file and reload instead"
    )


def put(
    conn: Connection, schedule: Schedule, next_at: datetime | None, *, replace: bool, now: datetime
) -> None:
    lock_definitions(conn)
    schedule = dataclasses.replace(schedule, source=Source.API)
    columns = definition_columns(schedule)
    query = sa.select(schedules.c.source, schedules.c.timing).where(
        schedules.c.name == schedule.name
    )
    existing = conn.execute(query.with_for_update()).one_or_none()  # see _locked
    if existing is not None and existing.source == Source.FILE.value:
        raise _owned_by_file(schedule.name)
    if existing is not None and not replace:
        raise AlreadyExists(f"schedule {schedule.name!r} already exists")
    if existing is None:
        conn.execute(
            sa.insert(schedules).values(
                name=schedule.name,
                next_at=next_at,
                created_at=now,
                updated_at=now,
                version=first_version(now),
                bucket=bucket(schedule.name),
                **columns,
            )
        )
    else:
        values: dict[str, Any] = dict(columns, updated_at=now, version=schedules.c.version + 1)
        withdrawn = firelog.withdraw(conn, [schedule.name], now)
        if existing.timing != columns["timing"]:
            values["next_at"] = next_at
        elif schedule.name in withdrawn:  # decide those instants again, as now defined
            values["next_at"] = withdrawn[schedule.name]
        conn.execute(sa.update(schedules).where(schedules.c.name == schedule.name).values(values))
    bump(conn)


def delete(conn: Connection, name: str, now: datetime) -> None:
    lock_definitions(conn)
    query = sa.select(schedules.c.source).where(schedules.c.name == name)
    source = conn.execute(query.with_for_update()).scalar_one_or_none()  # see _locked
    if source is None:
        raise NotFound(f"no schedule named {name!r}")
    if source == Source.FILE.value:
        raise _owned_by_file(name)
    firelog.withdraw(conn, [name], now)
    conn.execute(sa.delete(schedules).where(schedules.c.name == name))
    bump(conn)


def set_paused(
    conn: Connection,
    name: str,
    paused: bool,
    note: str | None,
    next_at: datetime | None,
    now: datetime,
) -> None:
    lock_definitions(conn)
    query = sa.select(schedules.c.paused).where(schedules.c.name == name)
    was = conn.execute(query.with_for_update()).scalar_one_or_none()  # see _locked
    if was is None:
        raise NotFound(f"no schedule named {name!r}")
    values: dict[str, Any] = {
        "paused": paused,
        "pause_note": note if paused else None,
        "version": schedules.c.version + 1,
        "updated_at": now,
    }
    if was and not paused:
        values["next_at"] = next_at
    if paused:
        firelog.withdraw(conn, [name], now)
    conn.execute(sa.update(schedules).where(schedules.c.name == name).values(values))
    bump(conn)


def load_file(
    conn: Connection,
    listed: Sequence[Schedule],
    next_at: NextAt,
    now: datetime,
    decoded: Decoded | None = None,
) -> ReconcileResult:
    """Make the file's schedules the stored file schedules, in this one transaction.

    Works through the schedules _LOAD_CHUNK at a time in name order (rows are
    locked in name order everywhere, record() too, so no deadlock): only one
    chunk's columns and parameters are in memory at once, not the whole file's.

    `decoded` (the due query's cache) is given the file's own schedule objects
    under the digests computed here anyway, so the leader shares them with the
    settings instead of decoding a second copy of each (100,000: about 28 MB).
    A digest maps to its schedule whether or not this transaction commits.
    """
    check_unique(listed)
    lock_definitions(conn)
    file_names = {item.name for item in listed}
    by_api: set[str] = set()
    owned = sa.select(schedules.c.name).where(schedules.c.source == Source.FILE.value)
    owned_names = conn.execute(owned.execution_options(yield_per=_CHUNK)).scalars()
    removed = [name for name in owned_names if name not in file_names]
    dialect = conn.dialect.name
    for names in eng.chunks(sorted(file_names), dialect):
        others = sa.select(schedules.c.name).where(
            eng.in_list(schedules.c.name, names, dialect), schedules.c.source != Source.FILE.value
        )
        by_api.update(conn.execute(others).scalars())
    del file_names
    for item in listed:  # in file order, before anything is written
        if item.name in by_api:
            raise Conflict(
                f"schedule {item.name!r} is in the config file but was added through "
                "the API; remove one of them"
            )
    added: list[str] = []
    changed: list[str] = []
    in_order = sorted(listed, key=lambda item: item.name)
    for start in range(0, len(in_order), _LOAD_CHUNK):
        chunk = in_order[start : start + _LOAD_CHUNK]
        added_, changed_ = _load_chunk(conn, chunk, next_at, now, decoded)
        added.extend(added_)
        changed.extend(changed_)
    removed.sort()
    for names in _chunks(removed):
        _locked(conn, names)
        firelog.withdraw(conn, names, now)
        conn.execute(
            sa.delete(schedules).where(
                schedules.c.name.in_(names), schedules.c.source == Source.FILE.value
            )
        )
    result = ReconcileResult(
        added=tuple(sorted(added)), changed=tuple(sorted(changed)), removed=tuple(removed)
    )
    if result.added or result.changed or result.removed:
        bump(conn)
    return result


def _from_file(schedule: Schedule) -> Schedule:
    """The schedule as the file owns it (a copy only when it is not the file's already)."""
    if schedule.source is Source.FILE:
        return schedule
    return dataclasses.replace(schedule, source=Source.FILE)


def _load_chunk(
    conn: Connection,
    chunk: Sequence[Schedule],
    next_at: NextAt,
    now: datetime,
    decoded: Decoded | None,
) -> tuple[list[str], list[str]]:
    """Insert the new and update the changed schedules of one chunk; their names."""
    query = (
        sa.select(schedules.c.name, schedules.c.source, schedules.c.digest, schedules.c.timing)
        .order_by(schedules.c.name)  # the tick's order: no deadlock
        .with_for_update()  # see _locked
    )
    existing: dict[str, Row] = {}
    dialect = conn.dialect.name
    for names in eng.chunks([item.name for item in chunk], dialect):
        for row in conn.execute(query.where(eng.in_list(schedules.c.name, names, dialect))):
            existing[row.name] = Row(row.source, row.digest, row.timing)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for item in chunk:
        columns = definition_columns(item)  # the source aside, the same for a file schedule
        columns["source"] = Source.FILE.value
        if decoded is not None and len(decoded) < MAX_DECODED:
            decoded[item.name] = (_digest(columns["digest"]), _from_file(item))
        prev = existing.get(item.name)
        if prev is None:
            columns.update(
                name=item.name,
                next_at=next_at(_from_file(item)),
                created_at=now,
                updated_at=now,
                version=first_version(now),
                bucket=bucket(item.name),
            )
            inserts.append(columns)
        elif prev.digest != columns["digest"]:
            retime = prev.timing != columns["timing"]
            params = {f"b_{key}": value for key, value in columns.items()}
            params.update(
                b_name=item.name,
                b_retime=retime,
                b_next_at=next_at(_from_file(item)) if retime else None,
                b_updated_at=now,
            )
            updates.append(params)
    if inserts:
        conn.execute(sa.insert(schedules), inserts)
    withdrawn = firelog.withdraw(conn, [params["b_name"] for params in updates], now)
    for params in updates:
        if not params["b_retime"] and params["b_name"] in withdrawn:
            params.update(b_retime=True, b_next_at=withdrawn[params["b_name"]])  # decide again
    _update(conn, updates)
    return [row["name"] for row in inserts], [params["b_name"] for params in updates]


def _update(conn: Connection, params: list[dict[str, Any]]) -> None:
    """Changed definitions, in one statement so rows are locked in the params' (name) order.

    `next_at` is recomputed only where the timing changed (`b_retime`); other
    changes keep the run state.
    """
    if not params:
        return
    values: dict[str, Any] = {
        key: sa.bindparam(f"b_{key}", type_=schedules.c[key].type)
        for key in ("source", "definition", "digest", "kind", "spec", "timing", "timezone")
    }
    values["version"] = schedules.c.version + 1
    values["updated_at"] = sa.bindparam("b_updated_at", type_=schedules.c.updated_at.type)
    values["next_at"] = sa.case(
        (
            sa.bindparam("b_retime", type_=sa.Boolean()),
            sa.bindparam("b_next_at", type_=schedules.c.next_at.type),
        ),
        else_=schedules.c.next_at,
    )
    stmt = sa.update(schedules).where(schedules.c.name == sa.bindparam("b_name")).values(values)
    conn.execute(stmt, params)


def _chunks(items: Sequence[_T]) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
