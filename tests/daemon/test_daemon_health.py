"""Health tells the truth: a leader that cannot record or publish says so, with why.

In-process daemons over the memory store, with a store or publisher that
fails on demand; HEALTH_GRACE is shortened so a failure counts at once.
The same cases on real processes and PostgreSQL are in test_daemon_health_pg.py.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_daemon_inprocess import Lines, Running, every, wait_for

from beatd import daemon as daemon_module
from beatd.config import Settings, load_settings
from beatd.daemon import Daemon
from beatd.errors import BrokerError, StoreError
from beatd.model import Message, Outcome
from beatd.publish.base import Result
from beatd.publish.stdout import StdoutPublisher
from beatd.store.memory import MemoryStore


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module, "HEALTH_GRACE", 0.3)


class Swappable:
    """A store whose database can refuse fire writes, or be replaced by an empty one."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.refuse_records = threading.Event()
        self.refuse_marks = threading.Event()

    def mark_sent(self, *args: Any) -> None:
        if self.refuse_marks.is_set():
            raise StoreError('database postgresql://…/beatd: relation "fires" does not exist')
        self.inner.mark_sent(*args)

    def record(self, *args: Any) -> list[str]:
        if self.refuse_records.is_set():
            raise StoreError(
                "database postgresql://…/beatd: value too long for type character varying(255)"
            )
        return self.inner.record(*args)

    def wait_for_change(self, since: int, timeout: float) -> int:
        return self.inner.wait_for_change(since, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RefusingPublisher(StdoutPublisher):
    def __init__(self, out: Lines) -> None:
        super().__init__(out)
        self.down = threading.Event()

    def publish(self, messages: Sequence[Message], now: datetime) -> list[Result]:
        if self.down.is_set():
            raise BrokerError("amqp://127.0.0.1:5672/: connection refused")
        return super().publish(messages, now)


def settings(*names: str) -> Settings:
    return Settings(
        database="memory://",
        lease=timedelta(seconds=3),
        schedules=tuple(every(n) for n in names),
    )


def test_a_leader_that_cannot_record_is_unhealthy_and_says_why() -> None:
    store = Swappable()
    out = Lines()
    daemon = Daemon(settings("pulse"), store, StdoutPublisher(out))  # type: ignore[arg-type]
    running = Running(daemon)
    try:
        wait_for(lambda: len(out.lines()) >= 2, what="two fires")
        assert daemon.problems() == [] and daemon.healthy()
        store.refuse_records.set()
        wait_for(lambda: not daemon.healthy(), what="unhealthy")
        (problem,) = daemon.problems()
        assert problem.startswith("tick: cannot record fires for ")
        assert problem.endswith("value too long for type character varying(255)")
        store.refuse_records.clear()
        wait_for(daemon.healthy, what="healthy again")
        seen = len(out.lines())
        wait_for(lambda: len(out.lines()) > seen, what="firing again")
    finally:
        assert running.stop() == 0


def test_a_leader_that_cannot_publish_is_unhealthy_and_says_why() -> None:
    out = Lines()
    publisher = RefusingPublisher(out)
    daemon = Daemon(settings("pulse"), MemoryStore(), publisher)
    running = Running(daemon)
    try:
        wait_for(lambda: len(out.lines()) >= 1, what="a fire")
        publisher.down.set()
        wait_for(lambda: not daemon.healthy(), what="unhealthy")
        (problem,) = daemon.problems()
        assert problem.startswith("broker: cannot publish for ")
        assert problem.endswith("amqp://127.0.0.1:5672/: connection refused")
        publisher.down.clear()
        wait_for(daemon.healthy, timeout=15, what="healthy again")  # after the broker backoff
    finally:
        assert running.stop() == 0


def test_a_standby_is_not_blamed_for_the_broker() -> None:
    store = MemoryStore()
    held = store.acquire("someone-else", timedelta(seconds=60), "someone-else")
    assert held is not None
    publisher = RefusingPublisher(Lines())
    publisher.down.set()
    daemon = Daemon(settings("pulse"), store, publisher)
    running = Running(daemon)
    try:
        started = daemon.clock.monotonic()
        wait_for(lambda: daemon.clock.monotonic() - started > 1.0, what="a second as standby")
        assert daemon.problems() == []
    finally:
        assert running.stop() == 0


def test_a_database_that_lost_beatd_s_rows_gets_the_file_s_schedules_again(
    tmp_path: Path,
) -> None:
    """Recreated (and upgraded) under a running leader: the file is loaded again, firing resumes."""
    config = tmp_path / "beatd.toml"
    config.write_text(
        '[beatd]\nlease = "3s"\n'
        '[schedules.pulse]\nevery = "1s"\ntask = "t"\n'
        '[schedules.beat]\nevery = "1s"\ntask = "t"\n'
    )
    store = Swappable()
    out = Lines()
    daemon = Daemon(load_settings(config), store, StdoutPublisher(out))  # type: ignore[arg-type]
    running = Running(daemon)
    try:
        wait_for(
            lambda: {line["schedule"] for line in out.lines()} == {"pulse", "beat"}, what="both"
        )
        store.inner = MemoryStore()  # a new, empty database
        wait_for(
            lambda: [s.schedule.name for s in store.inner.all()] == ["beat", "pulse"],
            what="the file's schedules loaded again",
        )
        seen = len(out.lines())
        wait_for(lambda: len(out.lines()) >= seen + 2, what="firing again")
        assert daemon.healthy()
    finally:
        assert running.stop() == 0


def test_a_confirmed_fire_whose_mark_sent_failed_is_marked_later() -> None:
    store = Swappable()
    out = Lines()
    daemon = Daemon(settings("pulse"), store, StdoutPublisher(out))  # type: ignore[arg-type]
    running = Running(daemon)
    try:
        wait_for(lambda: len(out.lines()) >= 1, what="a fire")
        store.refuse_marks.set()
        seen = len(out.lines())
        wait_for(lambda: len(out.lines()) >= seen + 2, what="fires confirmed, not marked")
        store.refuse_marks.clear()
        unmarked = {str(line["fire_id"]) for line in out.lines()[seen:]}

        def marked() -> bool:
            records = store.inner.history("pulse", 1000)
            return all(r.outcome is Outcome.SENT for r in records if r.fire_id in unmarked)

        wait_for(marked, timeout=15, what="the fires confirmed meanwhile marked sent")
    finally:
        assert running.stop() == 0
