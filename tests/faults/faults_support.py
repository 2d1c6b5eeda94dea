"""The fault suite's tools: a cluster that can skew clocks and skip migrations, a
consumer that survives a broker outage, fault injectors, and the accounting.

Built on tests/daemon/daemon_cluster.py (the daemon engineer's process
helpers); only what the faults need beyond it lives here.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import sqlalchemy as sa
from daemon_cluster import ROOT, Beatd, Cluster, wait_for
from pika.exceptions import AMQPError

LONG = os.environ.get("BEATD_LONG") == "1"
# Stopping the shared broker or restarting the shared PostgreSQL breaks whatever
# else runs against them: those scenarios run only when asked (CI sets
# BEATD_FAULTS_DISRUPT=1) or against a private node / cluster.
DISRUPT = os.environ.get("BEATD_FAULTS_DISRUPT") == "1"
# BEATD_FAULTS_PG_CLUSTER="15 other" (with BEATD_TEST_PG on its port) restarts a
# private cluster instead of the shared one.
PG_CLUSTER = os.environ.get("BEATD_FAULTS_PG_CLUSTER")
LEASE = 3.0
SECOND = timedelta(seconds=1)

# Two second-granularity schedules: every instant of the window must be accounted for.
SCHEDULES: dict[str, dict[str, str]] = {
    "tick": {"every": "1s", "misfire": "all", "task": "app.tasks.tick"},
    "cron6": {"cron": "* * * * * *", "misfire": "all", "task": "app.tasks.cron6"},
}


class FaultCluster(Cluster):
    """A Cluster whose processes may get extra environment (a clock offset file)."""

    def __init__(self, db_url: str, amqp_url: str, tmp: Path, *, migrate: bool = True) -> None:
        self._migrate = migrate
        super().__init__(db_url, amqp_url, tmp)

    def __post_init__(self) -> None:
        if self._migrate:
            super().__post_init__()
            return
        self.engine = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)
        self.config = self.tmp / "beatd.toml"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for key in ("BEATD_DATABASE", "BEATD_BROKER", "BEATD_CONFIG", "NOTIFY_SOCKET"):
            env.pop(key, None)
        env.update(extra or {})
        return env

    def start(self, env: dict[str, str] | None = None, *, upgrade: bool = False) -> Beatd:
        """`beatd run` (after `beatd db upgrade` in the same process slot, if asked)."""
        n = len(self.procs)
        log = self.tmp / f"beatd-{n}.log"
        run = " ".join([*self._beatd, "run", "--log-format", "json"])
        if upgrade:
            command = ["sh", "-c", f"{' '.join(self._beatd)} db upgrade && exec {run}"]
        else:
            command = [*self._beatd, "run", "--log-format", "json"]
        with log.open("wb") as err, (self.tmp / f"beatd-{n}.out").open("wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=err, env=self.env(env), cwd=self.tmp
            )
        beatd = Beatd(proc, log)
        self.procs.append(beatd)
        return beatd

    def lease(self) -> Any:
        """The lease row, or None while the tables do not exist yet."""
        try:
            return super().lease()
        except sa.exc.ProgrammingError:
            return None

    def stdout_of(self, beatd: Beatd) -> str:
        return (self.tmp / f"beatd-{self.procs.index(beatd)}.out").read_text()

    def live(self) -> list[Beatd]:
        return [b for b in self.procs if b.proc.poll() is None]

    def stop_all(self) -> None:
        """SIGTERM every live process at once; each must exit 0."""
        live = self.live()
        for beatd in live:
            beatd.signal(15)
        codes = {b.proc.pid: b.wait(40) for b in live}
        assert set(codes.values()) <= {0}, f"exit codes {codes}"

    def error_lines(self, beatd: Beatd) -> list[dict[str, Any]]:
        found = []
        for line in beatd.log_lines():
            try:
                entry = json.loads(line)
            except ValueError:
                found.append({"level": "raw", "msg": line})
                continue
            if entry.get("level") in ("error", "critical"):
                found.append(entry)
        return found

    def terminate_connections(self) -> int:
        """pg_terminate_backend every connection to this test's database (only it)."""
        name = self.engine.url.database
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": name},
            ).all()
        return len(rows)

    def epochs_by_decided(self) -> list[tuple[datetime, int | None]]:
        return sorted((f["decided_at"], f["epoch"]) for f in self.fires())


def pg_ctl(action: str, *, check: bool = True) -> None:
    """`pg_ctlcluster` restart / stop / start of the PostgreSQL server (see PG_CLUSTER)."""
    version, name = (PG_CLUSTER or "15 main").split()
    ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action]
    subprocess.run(ctl, check=check, capture_output=True, timeout=120)


class Recorder:
    """Consumes the queue in a thread, reconnecting through broker outages.

    Acks after recording, so a delivery lost with a dying connection comes
    back (flagged redelivered) rather than vanishing. `arrived` is set on
    every message.
    """

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.got: list[tuple[str, datetime, float, bool]] = []  # id, scheduled_for, arrival, redel
        self.bodies: dict[str, bytes] = {}
        self.arrived = threading.Event()
        self.reconnects = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "the recorder could not connect"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
            except (AMQPError, OSError):
                self.reconnects += 1
                self._stop.wait(0.2)

    def _consume(self) -> None:
        params = pika.URLParameters(self.url)
        params.connection_attempts, params.retry_delay, params.socket_timeout = 1, 0, 2
        conn = pika.BlockingConnection(params)
        try:
            ch = conn.channel()
            ch.queue_declare(self.queue, durable=True)
            ch.basic_qos(prefetch_count=100)
            self._ready.set()
            for method, props, body in ch.consume(self.queue, inactivity_timeout=0.1):
                if self._stop.is_set():
                    break
                if method is None:
                    continue
                header = props.headers["beatd-scheduled-for"].replace("Z", "+00:00")
                with self._lock:
                    self.bodies[props.message_id] = body
                    self.got.append(
                        (
                            props.message_id,
                            datetime.fromisoformat(header),
                            time.time(),
                            bool(method.redelivered),
                        )
                    )
                self.arrived.set()
                ch.basic_ack(method.delivery_tag)
            ch.cancel()
        finally:
            if conn.is_open:
                try:
                    conn.close()
                except AMQPError:
                    pass

    def messages(self) -> list[tuple[str, datetime, float, bool]]:
        with self._lock:
            return list(self.got)

    def ids(self) -> set[str]:
        return {m[0] for m in self.messages()}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        assert not self._thread.is_alive(), "the recorder did not stop"


# -- the accounting ------------------------------------------------------------------


@dataclass
class Account:
    """One scenario's books: what was due, recorded, delivered, doubled and lost."""

    scenario: str
    expected: int = 0
    recorded: int = 0
    delivered: int = 0
    duplicates: int = 0
    redelivered: int = 0
    lost: int = 0
    max_record_late: float = 0.0
    max_deliver_late: float = 0.0
    epochs: int = 0
    faults: int = 0
    problems: list[str] = field(default_factory=list)

    ROW = "{:<28} {:>8} {:>8} {:>9} {:>5} {:>5} {:>6} {:>9} {:>10} {:>6}"

    def table(self) -> str:
        head = self.ROW.format(
            "scenario",
            "expected",
            "recorded",
            "delivered",
            "dups",
            "lost",
            "faults",
            "rec.late",
            "deliv.late",
            "epochs",
        )
        row = self.ROW.format(
            self.scenario,
            self.expected,
            self.recorded,
            self.delivered,
            self.duplicates,
            self.lost,
            self.faults,
            f"{self.max_record_late:.2f}s",
            f"{self.max_deliver_late:.2f}s",
            self.epochs,
        )
        return f"{head}\n{row}"

    def save(self) -> None:
        path = os.environ.get("BEATD_FAULTS_REPORT")
        if path:
            with open(path, "a") as out:
                out.write(json.dumps({**self.__dict__, "at": time.time()}) + "\n")


def account(
    cluster: FaultCluster,
    recorder: Recorder,
    scenario: str,
    *,
    faults: int,
    deliver_late: float,
    record_late: float = 2.5,
    max_duplicates: int = 0,
    crashes: list[float] | None = None,
    ordered: bool = False,
    schedules: tuple[str, ...] = tuple(SCHEDULES),
) -> Account:
    """Check the books after every process has stopped; print and return them.

    Per schedule, every instant from its first recorded one to its last is
    recorded exactly once and sent; every fire id reached the queue; a
    duplicate delivery only repeats an id already seen; lateness is bounded.
    """
    books = Account(scenario, faults=faults)
    fires = cluster.fires()
    got = recorder.messages()
    books.redelivered = sum(1 for m in got if m[3])
    for name in schedules:
        rows = [f for f in fires if f["schedule"] == name]
        if not rows:
            books.problems.append(f"{name}: nothing recorded")
            continue
        _instants(books, name, [f["scheduled_for"] for f in rows])
        _deliveries(books, name, rows, got, ordered)
    strangers = {m[0] for m in got} - {f["fire_id"] for f in fires}
    if strangers:
        books.problems.append(f"{len(strangers)} delivered ids were never recorded")
    fresh = [m[0] for m in got if not m[3]]  # a consumer-side redelivery is not beatd's doing
    books.duplicates = len(fresh) - len(set(fresh))
    _duplicates(books, got, crashes)
    books.epochs = len({f["epoch"] for f in fires})
    _bounds(books, record_late, deliver_late, max_duplicates)
    print()
    print(books.table())
    for problem in books.problems:
        print(f"  PROBLEM: {problem}")
    _show_publishers(cluster, got)
    books.save()
    return books


def _instants(books: Account, name: str, instants: list[datetime]) -> None:
    """Every second from the first recorded instant to the last, each once."""
    span = int((instants[-1] - instants[0]) / SECOND) + 1
    books.expected += span
    books.recorded += len(instants)
    if len(set(instants)) != len(instants):
        books.problems.append(f"{name}: an instant recorded twice")
    missing = span - len(set(instants))
    if missing:
        gaps = [
            (a.isoformat(), b.isoformat())
            for a, b in itertools.pairwise(instants)
            if b - a != SECOND
        ]
        books.problems.append(f"{name}: {missing} instants never recorded, gaps {gaps[:5]}")
    books.lost += missing


def _deliveries(
    books: Account,
    name: str,
    rows: list[dict[str, Any]],
    got: list[tuple[str, datetime, float, bool]],
    ordered: bool,
) -> None:
    first_arrival: dict[str, float] = {}
    order: list[datetime] = []
    ids = {r["fire_id"] for r in rows}
    for fid, at, arrived, _ in got:
        if fid in ids and fid not in first_arrival:
            first_arrival[fid] = arrived
            order.append(at)
    if ordered and order != sorted(order):
        books.problems.append(f"{name}: first deliveries out of scheduled order")
    for row in rows:
        at: datetime = row["scheduled_for"]
        late = (row["decided_at"] - at).total_seconds()
        books.max_record_late = max(books.max_record_late, late)
        if row["outcome"] != "sent":
            books.problems.append(f"{name}: {at} is {row['outcome']}")
            books.lost += 1
        arrived = first_arrival.get(row["fire_id"])
        if arrived is None:
            books.problems.append(f"{name}: {at} never delivered")
            books.lost += 1
            continue
        books.delivered += 1
        lateness = arrived - at.timestamp()
        books.max_deliver_late = max(books.max_deliver_late, lateness)
        if lateness < -0.05:
            books.problems.append(f"{name}: {at} delivered {-lateness:.3f}s early")


def _duplicates(
    books: Account, got: list[tuple[str, datetime, float, bool]], crashes: list[float] | None
) -> None:
    """Print each doubled delivery; with `crashes` (wall times of the faults), each
    doubled id's first copy must have arrived in the 2 s before one of them: a
    duplicate is only ever a fire confirmed but not yet marked sent at a crash."""
    counts = Counter(m[0] for m in got if not m[3])
    first: dict[str, float] = {}
    for fid, at, arrived, _ in got:
        if counts[fid] > 1:
            print(f"  duplicate {fid[:8]} scheduled {at:%H:%M:%S} arrived {arrived % 60:.3f}")
            first.setdefault(fid, arrived)
    if crashes is None:
        return
    for fid, arrived in first.items():
        if not any(crash - 2.0 <= arrived <= crash + 0.5 for crash in crashes):
            books.problems.append(f"duplicate {fid} was not delivered just before a fault")


def _show_publishers(cluster: FaultCluster, got: list[tuple[str, datetime, float, bool]]) -> None:
    """For each doubled id, which process published it when: its `fire published` lines."""
    doubled = {fid for fid, n in Counter(m[0] for m in got if not m[3]).items() if n > 1}
    for fid in sorted(doubled):
        for i, beatd in enumerate(cluster.procs):
            for line in beatd.log_lines():
                if fid in line and '"fire published"' in line:
                    print(f"  {fid[:8]} by beatd #{i} pid {beatd.proc.pid}: {line}")


def _bounds(books: Account, record_late: float, deliver_late: float, duplicates: int) -> None:
    if books.max_record_late > record_late:
        books.problems.append(f"recorded {books.max_record_late:.2f}s late (bound {record_late}s)")
    if books.max_deliver_late > deliver_late:
        books.problems.append(
            f"delivered {books.max_deliver_late:.2f}s late (bound {deliver_late}s)"
        )
    if books.duplicates > duplicates:
        books.problems.append(f"{books.duplicates} duplicates (at most {duplicates})")


@contextmanager
def running(cluster: FaultCluster, recorder: Recorder) -> Iterator[None]:
    """Print the logs' tails when a scenario fails; always stop the processes."""
    try:
        yield
    except BaseException:
        for i, beatd in enumerate(cluster.procs):
            print(f"--- beatd #{i} pid {beatd.proc.pid} ---")
            print("\n".join(beatd.log_lines()[-30:]))
        raise
    finally:
        recorder.stop()


def wait_delivered(cluster: FaultCluster, recorder: Recorder, timeout: float = 30) -> None:
    """After the processes stopped: wait until every sent fire reached the recorder."""
    sent = {f["fire_id"] for f in cluster.fires() if f["outcome"] == "sent"}
    deadline = time.monotonic() + timeout
    while not sent <= recorder.ids() and time.monotonic() < deadline:
        recorder.arrived.clear()
        recorder.arrived.wait(0.2)


def stop_and_settle(cluster: FaultCluster, recorder: Recorder) -> None:
    """Stop every process, then wait until each fire marked sent reached the recorder."""
    cluster.stop_all()
    wait_delivered(cluster, recorder)


def wait_new_fires(
    cluster: FaultCluster,
    seconds: int,
    what: str,
    timeout: float = 20,
    names: Iterable[str] = SCHEDULES,
) -> None:
    """Wait until every schedule of `names` has a fire at least `seconds` past the DB's now."""
    with cluster.engine.connect() as conn:
        target = conn.execute(sa.text("SELECT now()")).scalar_one() + timedelta(seconds=seconds)

    def done() -> bool:
        latest: dict[str, datetime] = {}
        for f in cluster.fires():
            latest[f["schedule"]] = f["scheduled_for"]
        return all(latest.get(name, target - SECOND) >= target for name in names)

    cluster.wait_for(done, timeout, what)


def seeded(what: str) -> random.Random:
    """A random source whose seed is printed, so a failing run can be replayed."""
    seed = random.randrange(2**32)
    print(f"{what} seed {seed}")
    return random.Random(seed)


def pg_restart(crashes: list[float]) -> None:
    """Restart PostgreSQL; `crashes` gets when the restart began and when it ended (a
    duplicate first delivered from 2 s before the one to just after the other is its)."""
    began = time.time()
    pg_ctl("restart")
    crashes.extend((began, time.time()))


def pg_down_past_the_lease(cluster: FaultCluster, faults: list[float]) -> None:
    """Stop PostgreSQL until every instance has seen it gone for two leases (self-fenced)."""
    pg_ctl("stop")
    faults.append(time.time())
    down = time.monotonic()
    cluster.wait_for(
        lambda: (
            time.monotonic() - down > 2 * LEASE
            and all(cluster.error_lines(b) for b in cluster.procs)
        ),
        60,
        "every instance to notice the database is gone",
        step=0.2,
    )


__all__ = ["DISRUPT", "LEASE", "LONG", "PG_CLUSTER", "SCHEDULES", "Beatd", "wait_for"]
