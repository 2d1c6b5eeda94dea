"""The daemon at its edges: HTTP clients that misbehave, reloads that raise, early signals."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from beatd.config import Settings
from beatd.daemon import Daemon
from beatd.http import HttpServer
from beatd.logs import setup
from beatd.metrics import Metrics
from beatd.model import Every, Schedule
from beatd.publish.amqp import AmqpPublisher
from beatd.publish.stdout import StdoutPublisher
from beatd.store.memory import MemoryStore

REPO = Path(__file__).resolve().parents[2]
EVERY_SECOND = (
    '[beatd]\nbroker = "stdout://"\nlease = "2s"\n[schedules.a]\nevery = "1s"\ntask = "t.a"\n'
)


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


@pytest.fixture
def json_log(restore_logging: None) -> io.StringIO:
    """beatd's loggers as `--log-format json` at debug level, into a buffer."""
    stream = io.StringIO()
    setup("json", level=logging.DEBUG, stream=stream)
    return stream


# -- HTTP ------------------------------------------------------------------------------


def test_a_client_reset_is_one_debug_line_not_a_traceback(
    json_log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    server = HttpServer("127.0.0.1:0", Metrics(), lambda: [])
    try:
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers not finished
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # SO_LINGER 0: a reset, not a close
        wait_for(lambda: json_log.getvalue().count("\n") >= 3, what="three log lines")
        time.sleep(0.1)  # nothing more is written for them
    finally:
        server.close()
    entries = [json.loads(line) for line in json_log.getvalue().splitlines()]  # all JSON
    assert [e["level"] for e in entries] == ["debug"] * 3
    assert all("ConnectionResetError" in e["msg"] for e in entries), entries
    assert capfd.readouterr().err == ""


def test_an_idle_connection_is_closed_after_the_timeout(json_log: io.StringIO) -> None:
    server = HttpServer("127.0.0.1:0", Metrics(), lambda: [], idle_timeout=0.3)
    try:
        client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        started = time.monotonic()
        assert client.recv(1) == b""  # the server hung up on the silent client
        assert time.monotonic() - started < 5
        client.close()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as busy:
            busy.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")  # one that talks is answered
            assert busy.recv(100).startswith(b"HTTP/1.0 200")
    finally:
        server.close()
    assert "timed out" in json_log.getvalue()


# -- reloads ---------------------------------------------------------------------------


def test_a_reload_that_raises_anything_keeps_the_daemon_and_its_schedules(
    json_log: io.StringIO,
) -> None:
    """Not only a BeatdError: whatever loading raises is "reload failed", one line."""

    def broken(path: Path | None) -> Settings:
        raise RuntimeError("a defect while loading")

    store = MemoryStore()
    out = io.StringIO()
    schedule = Schedule(name="a", spec=Every(timedelta(seconds=1)), task="t.a")
    settings = Settings(database="memory://", lease=timedelta(seconds=3), schedules=(schedule,))
    daemon = Daemon(settings, store, StdoutPublisher(out), reload=broken)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    thread.start()
    try:
        wait_for(lambda: out.getvalue(), what="a first fire")
        daemon.request_reload()
        wait_for(lambda: "reload failed" in json_log.getvalue(), what="the reload's error")
        fired = out.getvalue().count("\n")
        wait_for(lambda: out.getvalue().count("\n") > fired, what="a fire after the reload")
        assert thread.is_alive() and daemon.healthy()
        assert [s.schedule.name for s in store.all()] == ["a"]
    finally:
        daemon.request_stop()
        thread.join(20)
    assert codes == [0]
    errors = [e for e in map(json.loads, json_log.getvalue().splitlines()) if e["level"] == "error"]
    assert [e["msg"] for e in errors] == [
        "reload failed, keeping the last good schedules: RuntimeError: a defect while loading"
    ]


class Process:
    """`beatd run` on SQLite and stdout:// in `folder`, its output in files."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None) -> None:
        self.out, self.err = folder / "stdout", folder / "stderr"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("BEATD_", "NOTIFY"))}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "beatd.cli.main", "--config", "beatd.toml", "run"],
                cwd=folder,
                env={**base, "PYTHONPATH": str(REPO), **(env or {})},
                stdout=out,
                stderr=err,
            )

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def fires(self) -> int:
        return self.out.read_text().count("\n")

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = 60) -> None:
        def alive() -> object:
            assert self.proc.poll() is None, f"beatd exited {self.proc.returncode}:\n{self.log()}"
            return condition()

        wait_for(alive, timeout, what)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def test_sighup_with_a_file_that_breaks_loading_keeps_the_daemon_running(
    tmp_path: Path, processes: list[Process]
) -> None:
    """An instant whose offset overflows raised OverflowError out of the reload: the
    process died (exit 1, a traceback, the lease not released)."""
    config = tmp_path / "beatd.toml"
    config.write_text(EVERY_SECOND)
    beatd = Process(tmp_path)
    processes.append(beatd)
    beatd.wait_for(lambda: beatd.fires() >= 1, "a first fire")
    config.write_text(
        EVERY_SECOND + '[schedules.b]\nat = "9999-12-31T23:00:00-14:00"\ntask = "t"\n'
    )
    beatd.proc.send_signal(signal.SIGHUP)
    beatd.wait_for(lambda: "reload failed" in beatd.log(), "the reload's error")
    fired = beatd.fires()
    beatd.wait_for(lambda: beatd.fires() > fired, "a fire after the reload")
    beatd.proc.send_signal(signal.SIGTERM)
    assert beatd.proc.wait(30) == 0
    assert "Traceback" not in beatd.log()
    assert "released the lease" in beatd.log()


# -- signals at start ------------------------------------------------------------------

# Holds `beatd run` at its first import of SQLAlchemy (the first slow thing it does)
# until the test says go: a signal then arrives at a known point of the start.
_HOLD = """
import os, sys, time

class _Hold:
    def find_spec(self, name, path=None, target=None):
        if name == "sqlalchemy":
            sys.meta_path.remove(self)
            open(os.environ["BEATD_TEST_HELD"], "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(os.environ["BEATD_TEST_GO"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        return None

sys.meta_path.insert(0, _Hold())
"""


def _held(tmp_path: Path, processes: list[Process]) -> tuple[Process, Path]:
    """A `beatd run` held at its first slow import; returns it and the file that releases it."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_HOLD)
    (tmp_path / "beatd.toml").write_text(EVERY_SECOND)
    held, go = tmp_path / "held", tmp_path / "go"
    env = {"BEATD_TEST_HELD": str(held), "BEATD_TEST_GO": str(go)}
    beatd = Process(tmp_path, env={**env, "PYTHONPATH": f"{hook}{os.pathsep}{REPO}"})
    processes.append(beatd)
    beatd.wait_for(held.exists, "beatd to reach its first slow import")
    return beatd, go


def test_sigterm_during_the_start_exits_0(tmp_path: Path, processes: list[Process]) -> None:
    """The handlers come before anything slow: a stop while the start is importing is kept,
    and the process exits 0 without starting (it was 143: killed by the default action)."""
    beatd, go = _held(tmp_path, processes)
    beatd.proc.send_signal(signal.SIGTERM)
    go.touch()
    assert beatd.proc.wait(60) == 0, beatd.log()
    assert "Traceback" not in beatd.log()
    assert " started" not in beatd.log() and beatd.fires() == 0


def test_sighup_during_the_start_is_a_reload_once_running(
    tmp_path: Path, processes: list[Process]
) -> None:
    """SIGHUP's default action ends a process: during the start it must not."""
    beatd, go = _held(tmp_path, processes)
    beatd.proc.send_signal(signal.SIGHUP)
    go.touch()
    beatd.wait_for(lambda: beatd.log().count("schedules loaded") == 2, "the start, then a reload")
    beatd.proc.send_signal(signal.SIGINT)
    assert beatd.proc.wait(30) == 0
    assert "Traceback" not in beatd.log()


# -- stopping ----------------------------------------------------------------------------


class Tarpit:
    """A broker that accepts connections and never says a word (overloaded, or half up)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    pit = Tarpit()
    yield pit
    pit.close()


def test_closing_the_publisher_cuts_a_connection_attempt_in_flight(tarpit: Tarpit) -> None:
    publisher = AmqpPublisher(f"amqp://guest:guest@127.0.0.1:{tarpit.port}/%2F")
    found: list[str | None] = []
    checking = threading.Thread(target=lambda: found.append(publisher.check()))
    checking.start()
    wait_for(lambda: tarpit.held, what="the connection attempt")
    started = time.monotonic()
    publisher.close()  # it waited for check(): pika gives up on a silent broker after 15 s
    assert time.monotonic() - started < 2
    checking.join(5)
    assert found and found[0] is not None and "closed" in found[0]
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "beatd-amqp-io"])


def test_sigterm_exits_promptly_after_the_stopped_line(
    tmp_path: Path, tarpit: Tarpit, processes: list[Process]
) -> None:
    """SIGTERM while a new leader's first connection to the broker is still opening: the
    process exited when that attempt gave up, up to 15 s after logging `stopped`."""
    port = socket.create_server(("127.0.0.1", 0))
    http = int(port.getsockname()[1])
    port.close()
    (tmp_path / "beatd.toml").write_text(
        f'[beatd]\nbroker = "amqp://guest:guest@127.0.0.1:{tarpit.port}/%2F"\nlease = "2s"\n'
        f'http = "127.0.0.1:{http}"\n[schedules.a]\nevery = "1h"\ntask = "t.a"\n'
    )
    beatd = Process(tmp_path)
    processes.append(beatd)
    beatd.wait_for(lambda: "leading" in beatd.log() and tarpit.held, "a leader connecting")
    beatd.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: " stopped" in beatd.log(), 30, "the stopped line")
    stopped = time.monotonic()
    assert beatd.proc.wait(30) == 0
    assert time.monotonic() - stopped < 2.0
