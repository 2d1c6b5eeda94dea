"""`beatd run` (the daemon, in the foreground) and `beatd status`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from datetime import datetime, timedelta
from typing import Any

from beatd.api import holders
from beatd.cli.main import EXIT_FAILURE, EXIT_OK, Signals, add_command, one_line
from beatd.cli.output import iso_utc, print_json
from beatd.clock import TEST_OFFSET_ENV, clock_from_env
from beatd.config import Settings, load_settings
from beatd.daemon import STORE_RETRY, Daemon
from beatd.errors import BeatdError, BrokerError, NotFound, SchemaError, StoreError
from beatd.http import HttpServer
from beatd.logs import FORMATS, setup
from beatd.model import Lease
from beatd.publish import open_publisher
from beatd.redact import redact
from beatd.store import open_or_create, open_store
from beatd.store.base import Store

log = logging.getLogger("beatd")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    run = add_command(
        sub, "run", "run the daemon in the foreground (many may run; one leads)", _run
    )
    run.add_argument(
        "--log-format", choices=FORMATS, default=None, help="log lines as json or text"
    )
    run.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="the least severe lines logged: info has one line per fire published or dropped "
        "(default: %(default)s)",
    )
    status = add_command(
        sub, "status", "leader, lease, fencing epoch, backlog, database and broker health", _status
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")


def _shown(exc: object, settings: Settings) -> str:
    """An error's text without the passwords of the database and broker URLs."""
    return redact(str(exc), settings.database, settings.broker)


def _open_store(settings: Settings, stop: threading.Event) -> Store | None:
    """Open the database, retrying while it is unreachable; None if stopped meanwhile."""
    failures = 0
    while not stop.is_set():
        try:
            return open_or_create(settings.database)
        except SchemaError:
            raise
        except StoreError as exc:
            failures += 1
            if failures == 1:
                log.error(f"cannot open the database, retrying: {_shown(exc, settings)}")
            stop.wait(STORE_RETRY.delay(failures))
    return None


def _run(args: argparse.Namespace) -> int:
    signals = args.signals or Signals()  # main() installed them before anything slow
    settings = load_settings(args.config)
    drain = setup(
        args.log_format or settings.log_format,
        LEVELS[args.log_level],
        urls=(settings.database, settings.broker),
        background=True,
    )
    try:
        return _serve(settings, signals)
    finally:
        drain()  # every line logged is out before the CLI prints an error line


def _serve(settings: Settings, signals: Signals) -> int:
    log.info(
        "beatd starting",
        extra={
            "database": redact(settings.database),
            "broker": redact(settings.broker),
            "config": str(settings.path) if settings.path else None,
        },
    )
    store = _open_store(settings, signals.stop)
    if store is None:
        return EXIT_OK
    publisher = open_publisher(settings.broker)
    http: HttpServer | None = None
    clock = clock_from_env(os.environ)
    if os.environ.get(TEST_OFFSET_ENV):
        log.warning(f"test clock: wall time shifted by the seconds in ${TEST_OFFSET_ENV}")
    try:
        daemon = Daemon(settings, store, publisher, clock)
        signals.attach(daemon)
        if settings.http:
            http = HttpServer(settings.http, daemon.metrics, daemon.problems)
            log.info("serving /metrics and /healthz", extra={"http": settings.http})
        return daemon.run()
    finally:
        if http is not None:
            http.close()
        publisher.close()
        store.close()


def _instances(store: Store, leases: list[Lease], ttl: timedelta) -> list[dict[str, Any]]:
    """Every process seen within two leases: its id, role, partitions, when it was last seen."""
    seen = store.instances(store.db_now() - 2 * max(ttl, timedelta(seconds=2)))
    found = []
    for i in seen:
        held = [x.partition for x in leases if x.token == i.token]
        shown: dict[str, Any] = {
            "id": i.holder,
            "role": "leader" if held else "standby",
            "started_at": iso_utc(i.started_at),
            "last_seen": iso_utc(i.last_seen),
        }
        if any(not p.whole for p in held):
            shown["partitions"] = [p.index for p in held]
        found.append(shown)
    return found


def _partitions(leases: list[Lease], count: int) -> list[dict[str, Any]]:
    """Each partition of `[beatd] partitions`: who holds it, at which epoch, until when."""
    return [
        {
            "partition": p.partition,
            "holder": p.holder,
            "epoch": p.epoch,
            "lease_expires": iso_utc(p.lease_expires) if p.lease_expires else None,
        }
        for p in holders(leases, count)  # what the console shows, from the same rows
    ]


LATE_AFTER_LEASES = 2  # status calls fires late past this many leases (a failover takes one)
FILE_SAMPLE = 5  # file schedules status looks for in the database
ANY_CLAIM = 2**62  # an epoch above every real one: "not claimed in it" is every outbox message


def _late(instant: datetime | None, now: datetime, settings: Settings, leader: str | None) -> str:
    """'ok', or since when something due was left undone, and who should have done it."""
    allowed = settings.lease * LATE_AFTER_LEASES
    if instant is None or now - instant <= allowed:
        return "ok"
    who = f"leader {leader}: its /healthz or log says why" if leader else "no leader"
    return f"due at {iso_utc(instant)}, {(now - instant).total_seconds():.0f} s ago ({who})"


def _file_loaded(store: Store, settings: Settings) -> str:
    """'ok' unless none of the file's schedules is in the database (recreated, or never loaded)."""
    names = [s.name for s in settings.schedules[:FILE_SAMPLE]]
    for name in names:
        try:
            store.get(name)
            return "ok"
        except NotFound:
            continue
    if not names:
        return "ok"
    return (
        f"error: none of the schedules of {settings.path or 'the config file'} is in the "
        "database (recreated, or no daemon loaded this file yet): a running daemon loads "
        "them again by itself; else start one"
    )


def _progress(store: Store, settings: Settings, leases: list[Lease]) -> dict[str, str]:
    """Is the leader recording and publishing what is due, and is the file in the database?"""
    now = store.db_now()
    leader = ", ".join(sorted({x.holder for x in leases})) or None
    recording = _late(store.next_due_at(), now, settings, leader)
    publishing = _late(store.next_publish_at(ANY_CLAIM), now, settings, leader)
    return {
        "recording": recording if recording == "ok" else f"error: a schedule {recording}",
        "publishing": publishing if publishing == "ok" else f"error: a fire {publishing}",
        "file": _file_loaded(store, settings),
    }


def _instance_line(shown: dict[str, Any]) -> str:
    held = shown.get("partitions")
    role = f"{shown['role']} of {', '.join(map(str, held))}" if held else shown["role"]
    return f"{shown['id']} ({role}, seen {shown['last_seen']})"


def _status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    report: dict[str, Any] = {
        "leader": None,
        "epoch": None,
        "lease_expires": None,
        "backlog": None,
        "instances": [],
        "database": "ok",
        "broker": "ok",
        "recording": None,
        "publishing": None,
        "file": None,
        "database_url": redact(settings.database),
        "broker_url": redact(settings.broker),
    }
    problems: list[BeatdError] = []
    try:
        store = open_store(settings.database)
        try:
            leases = store.leases()
            lease = store.current() if settings.partitions == 1 else None
            if lease is not None:
                report.update(
                    leader=lease.holder, epoch=lease.epoch, lease_expires=iso_utc(lease.expires_at)
                )
            if settings.partitions > 1:  # no one leader: each partition has its own
                report["partitions"] = _partitions(leases, settings.partitions)
            report["backlog"] = store.backlog()
            report["instances"] = _instances(store, leases, settings.lease)
            report.update(_progress(store, settings, leases))
        finally:
            store.close()
    except BeatdError as exc:
        problems.append(exc)
        report["database"] = f"error: {_shown(exc, settings)}"
    try:
        publisher = open_publisher(settings.broker)
        try:
            unreachable = publisher.check()
        finally:
            publisher.close()
        if unreachable is not None:
            raise BrokerError(unreachable)
    except BeatdError as exc:
        problems.append(exc)
        report["broker"] = f"error: {_shown(exc, settings)}"
    if args.json:
        print_json(report)
    else:
        for key, value in report.items():
            if key == "instances":
                value = ", ".join(_instance_line(i) for i in value) or None
            if key == "partitions":
                value = ", ".join(f"{p['partition']}: {p['holder'] or '-'}" for p in value)
            print(f"{key + ':':<15}{'-' if value is None else value}")
    sys.stdout.flush()
    for problem in problems:  # as every command says what is wrong, and exits the same way
        print(f"beatd: {one_line(_shown(problem, settings))}", file=sys.stderr)
    late = [key for key in ("recording", "publishing", "file") if report[key] not in (None, "ok")]
    for key in late:
        print(f"beatd: {key}: {report[key].removeprefix('error: ')}", file=sys.stderr)
    code = max((problem.exit_code for problem in problems), default=EXIT_OK)
    return max(code, EXIT_FAILURE if late else EXIT_OK)
