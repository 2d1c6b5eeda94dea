"""History stays bounded: the leader prunes it off the hot path; backfill respects what was pruned.

The daemon runs in-process on a real SQL store (SQLite and PostgreSQL) with a
short pruning interval; every wait is a poll against a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from test_daemon_inprocess import Lines, Running, every, wait_for

from beatd import daemon as daemon_module
from beatd.api import Beat
from beatd.config import Settings
from beatd.daemon import Daemon
from beatd.errors import ConfigError
from beatd.ids import fire_id
from beatd.model import Decision, Outcome
from beatd.publish.stdout import StdoutPublisher
from beatd.store import open_store
from beatd.store.base import Store
from beatd.store.sql import SqlStore, migrate


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    migrate.upgrade(db_url)
    opened = open_store(db_url)
    assert isinstance(opened, SqlStore)
    yield opened
    opened.close()


def old_history(store: Store, name: str, count: int, ago: timedelta) -> list[str]:
    """`count` sent fires of `name`, one a second, the newest `ago` in the past."""
    newest = datetime.now(UTC).replace(microsecond=0) - ago
    instants = [newest - timedelta(seconds=i) for i in range(count)]
    decisions = [
        Decision(name, at, fire_id(name, at), Outcome.DROPPED, reason="coalesced")
        for at in instants
    ]
    store.record(None, decisions, [])
    return [d.fire_id for d in decisions]


def test_the_leader_prunes_expired_history_in_batches_and_keeps_firing(
    store: SqlStore, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "PRUNE_EVERY", 0.2)
    monkeypatch.setattr(daemon_module, "PRUNE_BATCH", 500)
    old_history(store, "gone", 2_600, ago=timedelta(hours=2))  # six batches' worth
    stuck = datetime.now(UTC) - timedelta(hours=3)  # recorded, never confirmed
    store.record(
        None, [Decision("stuck", stuck, fire_id("stuck", stuck), Outcome.PENDING, None)], []
    )
    out = Lines()
    settings = Settings(
        database=db_url,
        lease=timedelta(seconds=3),
        keep_history=timedelta(minutes=1),
        schedules=(every("pulse"),),
    )
    daemon = Daemon(settings, store, StdoutPublisher(out))
    running = Running(daemon)
    try:
        wait_for(lambda: not store.history("gone", 1), timeout=60, what="old history pruned")
        fired = len(out.lines())
        wait_for(lambda: len(out.lines()) >= fired + 2, what="pulse still firing")
    finally:
        assert running.stop() == 0
    assert daemon.metrics.registry.get_sample_value("beatd_history_pruned_total") == 2_600
    assert [r.outcome for r in store.history("stuck", 5)] == [Outcome.PENDING]  # never pruned
    pulses = store.history("pulse", 1000)
    assert pulses and all(r.outcome is Outcome.SENT for r in pulses)  # recent: kept


def test_a_standby_prunes_nothing(
    store: SqlStore, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "PRUNE_EVERY", 0.05)
    old_history(store, "gone", 10, ago=timedelta(hours=2))
    held = store.acquire("someone-else", timedelta(seconds=30), "someone-else")
    assert held is not None
    settings = Settings(
        database=db_url, lease=timedelta(seconds=3), keep_history=timedelta(minutes=1)
    )
    daemon = Daemon(settings, store, StdoutPublisher(Lines()))
    running = Running(daemon)
    try:
        started = daemon.clock.monotonic()  # 20 rounds' time, had it been leading
        wait_for(lambda: daemon.clock.monotonic() - started > 1, what="a second as standby")
        assert not daemon.leader.is_leading()
    finally:
        running.stop()
        store.release(held)
    assert len(store.history("gone", 100)) == 10


def test_backfill_refuses_a_range_whose_history_may_be_pruned(store: SqlStore, db_url: str) -> None:
    """A missing row before the retention horizon may be a fire sent and pruned: never resend it."""
    settings = Settings(database=db_url, keep_history=timedelta(days=1))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with Beat(settings=settings) as beat:
        beat.add("hourly", every="1h", task="t")
        with pytest.raises(
            ConfigError, match=r"before the history kept \(\[beatd\] keep_history = 1d"
        ):
            beat.backfill("hourly", now - timedelta(days=2), now - timedelta(hours=1))
        done = beat.backfill("hourly", now - timedelta(hours=20), now - timedelta(hours=10))
        assert len(done.recorded) == 11

        beat.add("capped", every="1h", task="t", history_limit=3)
        done = beat.backfill("capped", now - timedelta(hours=10), now - timedelta(hours=5))
        assert len(done.recorded) == 6
        with pytest.raises(ConfigError, match=r"history_limit = 3 of 'capped'"):
            beat.backfill("capped", now - timedelta(hours=9), now - timedelta(hours=5))
        done = beat.backfill("capped", now - timedelta(hours=7), now - timedelta(hours=4))
        assert len(done.recorded) == 1
