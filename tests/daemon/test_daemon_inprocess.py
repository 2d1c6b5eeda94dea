"""The daemon in-process over the memory store: loops, reload, stop, sd_notify, HTTP, logs."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from beatd.config import Settings, load_settings
from beatd.daemon import Daemon
from beatd.errors import ConfigError, StoreError
from beatd.http import HttpServer, parse_bind
from beatd.logs import EACH
from beatd.metrics import Metrics
from beatd.model import WHOLE, Every, Misfire, Schedule
from beatd.publish.stdout import StdoutPublisher
from beatd.store.memory import MemoryStore
from beatd.systemd import Notifier


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


class Lines(io.StringIO):
    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line]


def every(name: str, seconds: int = 1) -> Schedule:
    return Schedule(name=name, spec=Every(timedelta(seconds=seconds)), task=f"t.{name}")


class Running:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.daemon.run()

    def stop(self) -> int | None:
        self.daemon.request_stop()
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self.code


class NotifySocket:
    """A bound datagram socket standing in for systemd; a thread collects what arrives."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="bn", dir="/tmp")
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.got: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                self.got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.folder)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


def test_daemon_publishes_stops_cleanly_and_releases(notify_socket: NotifySocket) -> None:
    path = notify_socket.path
    store = MemoryStore()
    out = Lines()
    settings = Settings(database="memory://", lease=timedelta(seconds=3), schedules=(every("a"),))
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    daemon = Daemon(settings, store, StdoutPublisher(out), notifier=notifier)
    running = Running(daemon)
    wait_for(lambda: len(out.lines()) >= 2, what="two fires published")
    assert daemon.healthy()
    assert running.stop() == 0
    assert store.current() is None  # released: a standby may take over at once
    ids = [line["fire_id"] for line in out.lines()]
    assert len(ids) == len(set(ids))
    wait_for(lambda: "STOPPING=1" in notify_socket.got, what="STOPPING=1")
    messages = "\n".join(notify_socket.got)
    assert "READY=1" in messages
    assert "WATCHDOG=1" in messages
    assert "STATUS=leader epoch 1" in messages
    assert not daemon.healthy()


def test_a_schedule_added_while_running_fires_within_a_second() -> None:
    store = MemoryStore()
    out = Lines()
    settings = Settings(database="memory://", lease=timedelta(seconds=3))
    running = Running(Daemon(settings, store, StdoutPublisher(out)))
    try:
        wait_for(lambda: store.current() is not None, what="leadership")
        led = time.monotonic()
        # a tick ran since: the tick loop is now idle-waiting (MAX_IDLE 5 s)
        wait_for(lambda: running.daemon._heartbeat > led, what="a tick while leading")
        started = time.monotonic()
        from beatd import timing

        schedule = every("late")
        store.put(schedule, timing.next_after(schedule, store.clock.now()), replace=False)
        wait_for(lambda: out.lines(), what="the new schedule's first fire")
        assert time.monotonic() - started < 2.0
    finally:
        assert running.stop() == 0


def write(path: Path, text: str) -> None:
    path.write_text(text)


def test_sighup_reload_applies_a_changed_file_and_keeps_the_last_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "beatd.toml"
    write(config, '[schedules.a]\nevery = "1h"\ntask = "t.a"\n')
    store = MemoryStore()
    daemon = Daemon(load_settings(config), store, StdoutPublisher(io.StringIO()))
    running = Running(daemon)
    try:
        wait_for(lambda: [s.schedule.name for s in store.all()] == ["a"], what="loaded")
        write(config, '[schedules.b]\nevery = "1h"\ntask = "t.b"\n')
        daemon.request_reload()
        wait_for(lambda: [s.schedule.name for s in store.all()] == ["b"], what="reloaded")
        write(config, "[schedules.c]\nevery = \n")
        with caplog.at_level(logging.ERROR, "beatd"):
            for reloads in (1, 2):  # one line per reload, however many problems
                daemon.request_reload()
                wait_for(lambda n=reloads: len(caplog.records) >= n, what="the error line")
        line, again = [r.getMessage() for r in caplog.records]
        assert line == again
        assert line.startswith("reload failed, keeping the last good schedules:")
        assert "beatd.toml:2" in line
        assert [s.schedule.name for s in store.all()] == ["b"]
        assert daemon.healthy()
    finally:
        assert running.stop() == 0


class Asking(MemoryStore):
    """Counts the daemon's requests for the lease."""

    asked = 0

    def acquire(self, holder: str, ttl: timedelta, token: str, partition: Any = WHOLE) -> Any:
        self.asked += 1
        return super().acquire(holder, ttl, token, partition)


def test_a_standby_does_not_publish() -> None:
    store = Asking()
    other = store.acquire("someone-else", timedelta(seconds=30), "someone-else")
    assert other is not None
    out = Lines()
    settings = Settings(database="memory://", lease=timedelta(seconds=3), schedules=(every("a"),))
    running = Running(Daemon(settings, store, StdoutPublisher(out)))
    wait_for(lambda: store.asked >= 4, what="the standby asking for the lease, refused")
    wait_for(lambda: store.all(), what="the file's schedules loaded")
    assert running.stop() == 0
    assert out.lines() == []
    assert store.current() == other


class Connecting(StdoutPublisher):
    """Notes when the daemon asks for a broker connection (check)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.connected = threading.Event()

    def check(self) -> str | None:
        self.connected.set()
        return super().check()


def test_the_broker_connection_opens_on_taking_the_lease_not_in_standby() -> None:
    store = Asking()
    other = store.acquire("someone-else", timedelta(seconds=30), "someone-else")
    assert other is not None
    publisher = Connecting()
    settings = Settings(database="memory://", lease=timedelta(seconds=3))
    running = Running(Daemon(settings, store, publisher))
    try:
        wait_for(lambda: store.asked >= 3, what="the standby asking for the lease, refused")
        assert not publisher.connected.is_set()
        store.release(other)
        assert publisher.connected.wait(5), "no connection once leading"
    finally:
        assert running.stop() == 0


class FlakyStore:
    """Wraps a store; every call raises StoreError while `down` is set."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down.is_set():
                self.refused += 1
                raise StoreError("database unreachable (test)")
            return attr(*args, **kwargs)

        return call


def test_a_database_outage_self_fences_logs_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = MemoryStore()
    store = FlakyStore(inner)
    out = Lines()
    tick = Schedule(name="a", spec=Every(timedelta(seconds=1)), task="t.a", misfire=Misfire.ALL)
    settings = Settings(database="memory://", lease=timedelta(seconds=3), schedules=(tick,))
    daemon = Daemon(settings, store, StdoutPublisher(out))
    running = Running(daemon)
    try:
        wait_for(lambda: len(out.lines()) >= 2, what="two fires")
        lease = inner.current()
        assert lease is not None
        with caplog.at_level(logging.INFO, "beatd"):
            store.down.set()
            cut = time.monotonic()
            wait_for(lambda: not daemon.leader.is_leading(), 5, "self-fence")
            assert time.monotonic() - cut < 3.0  # before the lease could expire
            assert inner.db_now() < lease.expires_at + timedelta(seconds=1)
            assert daemon.healthy()  # the loop is alive, only the database is not
            refused = store.refused  # the outage goes on; nothing more may be logged
            wait_for(lambda: store.refused >= refused + 6, what="the loops retrying, refused")
            store.down.clear()
            wait_for(daemon.leader.is_leading, 10, "leading again")
            seen = len(out.lines())
            wait_for(lambda: len(out.lines()) >= seen + 2, 10, "fires after the outage")
            wait_for(
                lambda: any(r.getMessage() == "database available again" for r in caplog.records),
                5,
                "the recovery line",
            )
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len([e for e in errors if e.startswith("database unavailable")]) == 1
        assert len([e for e in errors if e.startswith("cannot renew the lease")]) == 1
        assert len(errors) == 2
        back = [r for r in caplog.records if r.getMessage() == "database available again"]
        assert len(back) == 1
    finally:
        assert running.stop() == 0
    instants = [line["scheduled_for"] for line in out.lines()]
    assert len(instants) == len(set(instants))
    stamps = sorted(datetime.fromisoformat(str(i).replace("Z", "+00:00")) for i in instants)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(stamps))


# -- systemd ---------------------------------------------------------------------


def test_notify_sends_datagrams(notify_socket: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.path})
    assert notifier.ready("standby")
    assert notifier.reloading()
    assert notifier.stopping()
    wait_for(lambda: len(notify_socket.got) == 3, what="three datagrams")
    ready, reloading, stopping = notify_socket.got
    assert ready == "READY=1\nSTATUS=standby"
    assert reloading.split("\n")[0] == "RELOADING=1"
    assert reloading.split("\n")[1].startswith("MONOTONIC_USEC=")
    assert stopping == "STOPPING=1"


def test_a_full_notify_queue_never_hangs_the_daemon() -> None:
    folder = tempfile.mkdtemp(prefix="bn", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        started = time.monotonic()
        sent = [notifier.watchdog() for _ in range(13)]  # nobody reads: the queue fills
        assert sent[0] and not all(sent)
        assert time.monotonic() - started < 13 * 0.5 + 2
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(folder)


def test_notify_abstract_namespace() -> None:
    name = f"beatd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "0"}, None),
    ],
    ids=["unset", "set", "other-pid", "our-pid", "zero"],
)
def test_watchdog_interval_is_half(env: dict[str, str], interval: float | None) -> None:
    assert Notifier(env).watchdog_interval == interval


def test_notify_without_socket_is_a_no_op() -> None:
    assert not Notifier({}).enabled
    assert not Notifier({}).ready()


# -- http, logs --------------------------------------------------------------------


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_http_serves_metrics_and_health() -> None:
    metrics = Metrics()
    metrics.sent.inc(3)
    problems: list[str] = []
    server = HttpServer("127.0.0.1:0", metrics, lambda: problems)
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, body = get(base + "/metrics")
        assert code == 200 and 'beatd_fires_sent_total{partition="0"} 3.0' in body
        assert "beatd_fire_lag_seconds_bucket" in body and "beatd_is_leader" in body
        assert get(base + "/healthz") == (200, "ok\n")
        problems.append("tick: cannot record fires for 12 s: database ...: value too long")
        assert get(base + "/healthz") == (503, f"unhealthy\n{problems[0]}\n")
        assert get(base + "/nope")[0] == 404
    finally:
        server.close()


def test_each_partitions_view_counts_under_its_own_label_in_one_registry() -> None:
    metrics = Metrics()
    assert metrics.of(0) is metrics  # P = 1: the daemon's own, partition "0"
    metrics.of(2).sent.inc(5)
    metrics.sent.inc()
    metrics.of(2).lag.observe(0.2)
    value = metrics.registry.get_sample_value
    assert value("beatd_fires_sent_total", {"partition": "2"}) == 5
    assert value("beatd_fires_sent_total", {"partition": "0"}) == 1
    assert value("beatd_fire_lag_seconds_count", {"partition": "2"}) == 1
    assert value("beatd_fire_lag_seconds_count", {"partition": "0"}) == 0
    assert metrics.of(2).is_leader is metrics.is_leader  # the process's own: no label


@pytest.mark.parametrize(
    ("text", "bind"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
    ids=["host-port", "port-only-colon", "port-only", "ipv6", "all"],
)
def test_parse_bind(text: str, bind: tuple[str, int]) -> None:
    assert parse_bind(text) == bind


def test_parse_bind_rejects_garbage() -> None:
    with pytest.raises(ConfigError):
        parse_bind("localhost:http")


def test_a_running_daemon_says_what_it_does(caplog: pytest.LogCaptureFixture) -> None:
    """An INFO line per fire published (schedule, id, instant, lag); a standby says who leads."""
    store = MemoryStore()
    out = Lines()
    settings = Settings(database="memory://", lease=timedelta(seconds=3), schedules=(every("a"),))
    with caplog.at_level(logging.INFO, "beatd"):
        leader = Running(Daemon(settings, store, StdoutPublisher(out)))
        wait_for(lambda: len(out.lines()) >= 2, what="two fires")
        standby = Running(Daemon(settings, store, StdoutPublisher(io.StringIO())))
        wait_for(
            lambda: any(r.getMessage().startswith("standby") for r in caplog.records),
            what="the standby's line",
        )
        assert standby.stop() == 0
        assert leader.stop() == 0
    published = [
        line
        for r in caplog.records
        if r.getMessage() == "fire published"
        for line in r.__dict__[EACH]
    ]
    sent = {line["fire_id"] for line in out.lines()}
    assert {line["fire_id"] for line in published} == sent
    first = published[0]
    assert first["schedule"] == "a" and first["scheduled_for"].startswith("20")
    assert isinstance(first["lag_ms"], float)
    (line,) = [r for r in caplog.records if r.getMessage().startswith("standby")]
    assert line.__dict__["leader"] == leader.daemon.leader.holder


def test_a_long_database_outage_is_logged_again_every_30_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from beatd.daemon import OUTAGE_REPEAT, _Failures

    now = [100.0]
    outage = _Failures(lambda: now[0])
    with caplog.at_level(logging.ERROR, "beatd"):
        for _ in range(3):  # three loops notice at once: one line
            outage.failed("tick", StoreError("refused"))
        now[0] += OUTAGE_REPEAT - 1
        outage.failed("relay", StoreError("refused"))
        now[0] += 1
        outage.failed("lease", StoreError("refused"))
        now[0] += OUTAGE_REPEAT
        outage.failed("tick", StoreError("refused"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "database unavailable, retrying with backoff: refused",
        "database still unavailable after 30s: refused",
        "database still unavailable after 60s: refused",
    ]
