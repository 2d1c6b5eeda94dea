"""Helpers of the store tests (a uniquely named module: several conftest.py exist)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beatd.clock import FakeClock
from beatd.ids import fire_id
from beatd.model import Decision, Every, Lease, Message, Outcome, Schedule
from beatd.store import open_store
from beatd.store.base import Store
from beatd.store.sql import SqlStore, migrate


def sched(name: str, every: int = 60, **options: Any) -> Schedule:
    options.setdefault("task", "app.tasks.ping")
    return Schedule(name=name, spec=Every(timedelta(seconds=every)), **options)


@dataclass
class Backend:
    kind: str
    store: Store
    clock: FakeClock | None = None

    def expire(self, lease: Lease) -> None:
        """Let `lease` expire by the store's clock (move the fake one, or wait)."""
        if self.clock is not None:
            self.clock.set(lease.expires_at + timedelta(milliseconds=1))
            return
        while self.store.db_now() <= lease.expires_at:
            time.sleep(0.01)

    @property
    def short_ttl(self) -> timedelta:
        # Long enough that a loaded CI machine still uses the lease before it lapses.
        return timedelta(seconds=5) if self.clock is not None else timedelta(milliseconds=500)


def open_sql(url: str) -> SqlStore:
    migrate.upgrade(url)
    store = open_store(url)
    assert isinstance(store, SqlStore)
    return store


def close_checked(store: SqlStore) -> None:
    checked_out = store.engine.pool.checkedout()  # type: ignore[attr-defined]
    store.close()
    assert checked_out == 0, f"{checked_out} connection(s) left checked out"


def message(schedule: str, when: datetime, publish_at: datetime | None = None) -> Message:
    return Message(
        fire_id=fire_id(schedule, when),
        schedule=schedule,
        scheduled_for=when,
        publish_at=publish_at or when,
        exchange="",
        routing_key="celery",
        body=b'[[], {}, {"x": "\xc3\xa9"}]',
        headers={"task": "app.tasks.ping", "id": fire_id(schedule, when), "retries": 0},
        priority=5,
        expires_at=when + timedelta(hours=1),
        queue="celery",
    )


def pending(schedule: str, when: datetime, publish_at: datetime | None = None) -> Decision:
    return Decision(
        schedule, when, fire_id(schedule, when), Outcome.PENDING,
        message=message(schedule, when, publish_at),
    )  # fmt: skip
