"""Real `beatd run` processes on PostgreSQL + RabbitMQ, and ways to look at them.

Shared by the fault tests and bench/bench_daemon.py. Every wait is a poll of
the database or the queue against a deadline, never a blind sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import pika
import sqlalchemy as sa

from beatd.model import Partition
from beatd.store.sql import migrate

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    step: float = 0.02,
) -> T:
    """Poll `condition` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


@dataclass
class Beatd:
    proc: subprocess.Popen[bytes]
    log: Path
    signalled: bool = False

    @property
    def holder(self) -> str:
        return f"{socket.gethostname()}:{self.proc.pid}"

    def signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
            self.signalled = True
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)


@dataclass
class Lease:
    holder: str
    epoch: int
    live: bool


@dataclass
class Cluster:
    """A database, a unique queue and the config that ties beatd processes to them."""

    db_url: str
    amqp_url: str
    tmp: Path
    queue: str = field(default_factory=lambda: f"beatd-test-{uuid.uuid4().hex[:10]}")
    procs: list[Beatd] = field(default_factory=list)

    def __post_init__(self) -> None:
        migrate.upgrade(self.db_url)
        self.engine = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)
        self.config = self.tmp / "beatd.toml"

    # -- setting up ------------------------------------------------------------

    def write_config(
        self, schedules: dict[str, dict[str, str]], lease: str = "3s", extra: str = ""
    ) -> None:
        lines = [
            "[beatd]",
            f'database = "{self.db_url}"',
            f'broker = "{self.amqp_url}"',
            f'lease = "{lease}"',
            extra,
        ]
        for name, options in schedules.items():
            lines.append(f"[schedules.{name}]")
            lines.append(f'queue = "{self.queue}"')
            lines.extend(f'{k} = "{v}"' for k, v in options.items())
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def _beatd(self) -> list[str]:
        return [sys.executable, "-m", "beatd.cli.main", "--config", str(self.config)]

    def wait_for(
        self,
        condition: Callable[[], T | Literal[False] | None],
        timeout: float,
        what: str,
        step: float = 0.02,
    ) -> T:
        """wait_for, failing at once when a beatd we did not signal has exited."""

        def check() -> T | Literal[False] | None:
            for beatd in self.procs:
                if not beatd.signalled and beatd.proc.poll() is not None:
                    tail = "\n".join(beatd.log_lines()[-5:])
                    raise AssertionError(f"beatd pid {beatd.proc.pid} exited: {tail}")
            return condition()

        return wait_for(check, timeout, what, step)

    def start(self, extra_env: dict[str, str] | None = None) -> Beatd:
        log = self.tmp / f"beatd-{len(self.procs)}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for key in ("BEATD_DATABASE", "BEATD_BROKER", "BEATD_CONFIG", "NOTIFY_SOCKET"):
            env.pop(key, None)
        env.update(extra_env or {})
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [*self._beatd, "run", "--log-format", "json"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                cwd=self.tmp,
            )
        beatd = Beatd(proc, log)
        self.procs.append(beatd)
        return beatd

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [*self._beatd, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.tmp,
            timeout=60,
        )

    def close(self) -> None:
        for beatd in self.procs:
            if beatd.proc.poll() is None:
                beatd.proc.send_signal(signal.SIGCONT)
                beatd.proc.kill()
                beatd.proc.wait(10)
        with self.channel() as ch:
            ch.queue_delete(self.queue)
        self.engine.dispose()

    # -- looking ---------------------------------------------------------------

    def lease(self) -> Lease | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT holder, epoch, expires_at > now() FROM lease")
            ).first()
        return None if row is None else Lease(row[0], int(row[1]), bool(row[2]))

    def partition_holders(self, count: int) -> dict[int, tuple[str, int]]:
        """Partition -> (holder, epoch) of each live lease of `count` partitions (DB clock)."""
        query = sa.text(
            "SELECT name, holder, epoch FROM lease WHERE name LIKE :names AND expires_at > now()"
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query, {"names": f"partition %/{count}"}).all()
        found = {}
        for name, holder, epoch in rows:
            partition = Partition.named(name)
            assert partition is not None
            found[partition.index] = (str(holder), int(epoch))
        return found

    def leader(self) -> Beatd | None:
        lease = self.lease()
        if lease is None or not lease.live:
            return None
        return next((b for b in self.procs if b.holder == lease.holder), None)

    def fires(self, schedule: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT fire_id, schedule, scheduled_for, outcome, epoch, decided_at, sent_at"
        query += " FROM fires"
        params: dict[str, Any] = {}
        if schedule is not None:
            query += " WHERE schedule = :s"
            params["s"] = schedule
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(query + " ORDER BY scheduled_for"), params)
            return [dict(row._mapping) for row in rows]

    def schedule_names(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT name FROM schedules ORDER BY name"))
            return [r[0] for r in rows]

    def channel(self) -> _Channel:
        return _Channel(self.amqp_url)

    def drain(self) -> list[tuple[str, str]]:
        """Every message now in the queue, as (message_id, beatd-scheduled-for)."""
        out: list[tuple[str, str]] = []
        with self.channel() as ch:
            ch.queue_declare(self.queue, durable=True)
            while True:
                method, props, _body = ch.basic_get(self.queue, auto_ack=True)
                if method is None:
                    return out
                out.append((props.message_id, props.headers["beatd-scheduled-for"]))


class _Channel:
    def __init__(self, url: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()

    def __enter__(self) -> Any:
        return self.ch

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


class Consumer:
    """Consumes a queue in a thread, stamping each message's arrival (wall clock)."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.got: list[tuple[str, datetime, float]] = []  # (id, scheduled_for, arrived)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        ch = conn.channel()
        ch.queue_declare(self.queue, durable=True)
        self._ready.set()
        for method, props, _body in ch.consume(self.queue, auto_ack=True, inactivity_timeout=0.1):
            if self._stop.is_set():
                break
            if method is None:
                continue
            at = datetime.fromisoformat(props.headers["beatd-scheduled-for"].replace("Z", "+00:00"))
            self.got.append((props.message_id, at, time.time()))
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def running(db_url: str, amqp_url: str, tmp: Path, *, show_logs: int = 0) -> Iterator[Cluster]:
    """A Cluster, closed afterwards; with `show_logs`, each process's last lines are printed."""
    c = Cluster(db_url, amqp_url, tmp)
    try:
        yield c
    finally:
        for i, beatd in enumerate(c.procs if show_logs else []):
            print(f"--- beatd #{i} pid {beatd.proc.pid} ---")
            print("\n".join(beatd.log_lines()[-show_logs:]))
        c.close()
