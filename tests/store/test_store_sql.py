"""What only the SQL store does: schema checks, migrations, errors, indexes, types."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from store_helpers import close_checked, open_sql, pending, sched

from beatd.errors import ConfigError, SchemaError, StoreError
from beatd.ids import fire_id
from beatd.model import Decision, Every, Lease, Outcome, Schedule, Source
from beatd.store import has_tables, open_store
from beatd.store.sql import SqlStore, firelog, migrate, schedules
from beatd.store.sql import engine as eng
from beatd.store.sql.engine import make_engine, parse_url
from beatd.store.sql.tables import metadata

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_open_refuses_an_empty_database(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()
    assert not has_tables(db_url)
    with pytest.raises(SchemaError, match=r"no beatd tables; run: beatd db upgrade"):
        open_store(db_url)
    assert migrate.current_revision(db_url) is None
    assert migrate.upgrade(db_url) == (None, migrate.head())
    assert migrate.upgrade(db_url) == (migrate.head(), migrate.head())
    assert has_tables(db_url)
    assert migrate.check(db_url) == migrate.head()


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/absent.db"
    assert not has_tables(url)
    with pytest.raises(SchemaError, match="beatd db upgrade"):
        open_store(url)
    assert not (tmp_path / "absent.db").exists()


def _upgraded_then(db_url: str, version_sql: str) -> None:
    """Migrate to head, then tamper with the version table as `version_sql` says."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text(version_sql))
    engine.dispose()


def test_open_refuses_a_newer_schema(db_url: str) -> None:
    _upgraded_then(db_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaError, match="newer than this beatd"):
        open_store(db_url)
    with pytest.raises(SchemaError, match="newer"):
        migrate.upgrade(db_url)


def test_open_refuses_several_revisions(db_url: str) -> None:
    _upgraded_then(db_url, "INSERT INTO alembic_version (version_num) VALUES ('0000')")
    with pytest.raises(SchemaError, match="several schema revisions"):
        open_store(db_url)


def test_migrated_schema_equals_the_models(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []


def test_concurrent_upgrades_on_one_empty_database(db_url: str) -> None:
    results: list[object] = []

    def run() -> None:
        try:
            results.append(migrate.upgrade(db_url)[1])
        except Exception as error:  # collected, asserted below
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [migrate.head()] * 10
    store = open_sql(db_url)
    close_checked(store)


def test_bad_urls_are_one_line_errors_without_password() -> None:
    with pytest.raises(ConfigError):
        open_store("not a url")
    with pytest.raises(ConfigError, match="unsupported"):
        open_store("nosuchdb://x/y")
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://beatd:s3cr3t-pw@127.0.0.1:1/beatd")
    text = str(caught.value)
    assert "s3cr3t-pw" not in text and "***" in text and "\n" not in text
    assert caught.value.__cause__ is None
    assert parse_url("postgresql://h/db").drivername == "postgresql+psycopg"
    assert parse_url("postgres://h/db").drivername == "postgresql+psycopg"


def test_database_failures_become_store_errors(sql_store: SqlStore) -> None:
    with sql_store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE outbox"))
    with pytest.raises(StoreError, match="outbox") as caught:
        sql_store.backlog()
    assert not isinstance(caught.value.__context__, sa.exc.SQLAlchemyError) or (
        caught.value.__suppress_context__
    )


def test_naive_datetimes_are_refused(sql_store: SqlStore) -> None:
    with pytest.raises(StoreError, match="naive"):
        sql_store.put(sched("a"), datetime(2026, 1, 1), replace=False)


def test_instants_come_back_aware_utc(sql_store: SqlStore) -> None:
    berlin = T0.astimezone(ZoneInfo("Europe/Berlin"))
    sql_store.put(sched("a"), berlin, replace=False)
    got = sql_store.get("a").next_at
    assert got == T0 and got is not None and got.tzinfo is UTC


def test_due_sees_a_source_change_with_the_same_definition(sql_store: SqlStore) -> None:
    """The definition cache keys on digest and source: handing a file schedule to the API
    (same digest, as the benchmark's bulk load does) must show in the next due read."""
    sql_store.load_file([sched("f")], lambda s: T0)
    assert [s.schedule.source for s in sql_store.due(T0, 10)] == [Source.FILE]
    with sql_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE schedules SET source = 'api'"))
    assert [s.schedule.source for s in sql_store.due(T0, 10)] == [Source.API]


def test_load_file_hands_the_due_cache_the_file_schedules(sql_store: SqlStore) -> None:
    """The leader shares the file's schedule objects instead of decoding a copy of each;
    a definition changed afterwards is still read as it is now."""
    mine = dataclasses.replace(sched("f"), source=Source.FILE)
    decoded: schedules.Decoded = {}
    with sql_store.engine.begin() as conn:
        schedules.load_file(conn, [mine], lambda s: T0, T0, decoded)
        assert [s.schedule for s in schedules.due(conn, T0, 10, decoded)] == [mine]
        assert schedules.due(conn, T0, 10, decoded)[0].schedule is mine
    sql_store.load_file([sched("f", task="t.changed")], lambda s: T0)
    with sql_store.engine.begin() as conn:
        (got,) = schedules.due(conn, T0, 10, decoded)
    assert (got.schedule.task, got.schedule.source) == ("t.changed", Source.FILE)


def test_wait_for_change_listens(sql_store: SqlStore) -> None:
    since = sql_store.change_count()
    other = SqlStore(sql_store.url)
    timer = threading.Timer(0.2, lambda: other.put(sched("x"), T0, replace=False))
    timer.start()
    try:
        assert sql_store.wait_for_change(since, 10.0) == since + 1
    finally:
        timer.join()
        close_checked(other)


def _explain(store: SqlStore) -> str:
    query = schedules.due_query(T0, 100)
    compiled = query.compile(store.engine, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN" if store.dialect == "postgresql" else "EXPLAIN QUERY PLAN"
    with store.engine.connect() as conn:
        return "\n".join(str(row[-1]) for row in conn.exec_driver_sql(f"{prefix} {compiled}"))


def test_due_query_reads_the_next_at_index(sql_store: SqlStore) -> None:
    many = [
        Schedule(name=f"s{i:05d}", spec=Every(timedelta(minutes=1 + i % 50)), task="t")
        for i in range(10_000)
    ]
    # 100 are due, the rest in the future
    sql_store.load_file(many, lambda s: T0 - timedelta(seconds=int(s.name[1:]) % 100 + 1)
                        if int(s.name[1:]) < 100 else T0 + timedelta(days=1))  # fmt: skip
    with sql_store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    plan = _explain(sql_store)
    assert "ix_schedules_due" in plan, plan
    if sql_store.dialect == "postgresql":
        assert "Seq Scan" not in plan and "Sort" not in plan.split("Index")[0], plan
    assert len(sql_store.due(T0, 1000)) == 100


@pytest.mark.skipif(os.name != "posix", reason="WAL is checked on posix file systems")
def test_sqlite_runs_in_wal_mode(sqlite_url: str) -> None:
    store = open_sql(sqlite_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    close_checked(store)


def test_a_takeover_waits_for_the_fenced_transaction(sql_store: SqlStore) -> None:
    """The lease is checked and locked in record(): a new leader starts after its commit."""
    old = sql_store.acquire("old", timedelta(milliseconds=300), "old")
    assert old is not None
    checked, taken = threading.Event(), []

    def take_over() -> None:
        checked.wait()
        while sql_store.db_now() <= old.expires_at:
            time.sleep(0.01)
        lease = sql_store.acquire("new", timedelta(seconds=30), "new")
        taken.append((time.monotonic(), lease))

    thread = threading.Thread(target=take_over)
    thread.start()
    decision = Decision("a", T0, fire_id("a", T0), Outcome.DROPPED, reason="test")
    with eng.transaction(sql_store.engine, sql_store.url, write=True) as conn:
        assert firelog.record(conn, old, [decision], []) == [decision.fire_id]
        checked.set()
        time.sleep(0.8)  # the lease expires meanwhile; the takeover must wait
        assert taken == []
        committing = time.monotonic()
    thread.join()
    ((when, lease),) = taken
    assert when >= committing
    assert lease is not None and lease.epoch == old.epoch + 1
    assert [r.epoch for r in sql_store.history("a", 10)] == [old.epoch]


def test_a_frozen_renew_cannot_hold_the_lease_row(pg_url: str) -> None:
    """Any transaction left idle (its process stopped) ends: here a renew that locked
    the lease row and never committed, which used to stall every takeover for good."""
    store = open_sql(pg_url)
    old = store.acquire("old", timedelta(milliseconds=500), "old")
    assert old is not None
    frozen = store.engine.connect()
    tx = frozen.begin()
    renew = sa.text("UPDATE lease SET expires_at = expires_at WHERE holder = 'old'")
    assert frozen.execute(renew).rowcount == 1  # the row lock is held from here on
    taken: list[Lease] = []

    def take_over() -> None:
        while not taken:
            lease = store.acquire("new", timedelta(seconds=30), "new")  # waits on the row lock
            taken.extend([lease] if lease else [])
            time.sleep(0.05)

    thread = threading.Thread(target=take_over, daemon=True)
    thread.start()
    thread.join(eng.FROZEN_MS / 1000 + 5)
    assert taken, "the takeover stalled behind the frozen transaction"
    assert taken[0].epoch == old.epoch + 1
    with pytest.raises(sa.exc.DBAPIError, match="idle-in-transaction timeout"):
        tx.commit()
    frozen.close()
    close_checked(store)


def test_a_claim_adds_no_index_entries_on_postgresql(pg_url: str) -> None:
    """Claims are HOT updates (migration 0004 keeps room on the outbox's pages): the
    relay's per-fire write touches no index, the outbox's indexes stay small."""
    store = open_sql(pg_url)
    when = datetime.now(UTC) + timedelta(minutes=1)
    store.record(None, [pending(f"s{i}", when) for i in range(300)], [])
    lease = store.acquire("relay", timedelta(seconds=30), "relay")
    assert lease is not None
    assert len(store.claim(lease, when, 1000)) == 300
    close_checked(store)  # its sessions end: their statistics reach pg_stat now
    engine = make_engine(pg_url)
    query = sa.text(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'outbox'"
    )
    deadline = time.monotonic() + 15
    with engine.connect() as conn:
        while (row := conn.execute(query).one()).n_tup_upd < 300 and time.monotonic() < deadline:
            conn.rollback()  # a fresh statistics snapshot
            time.sleep(0.1)
    engine.dispose()
    assert (row.n_tup_upd, row.n_tup_hot_upd) == (300, 300)


def test_killed_connections_are_replaced(pg_url: str) -> None:
    store = open_sql(pg_url)
    store.put(sched("a"), T0, replace=False)
    admin = make_engine(pg_url)
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    admin.dispose()
    assert killed >= 1
    assert store.get("a").next_at == T0  # the pool pings and reconnects
    close_checked(store)
