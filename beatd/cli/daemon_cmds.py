"""`beatd run` (the daemon, in the foreground) and `beatd status`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import datetime
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit

from beatd.cli.main import EXIT_FAILURE, EXIT_OK, add_command
from beatd.cli.output import iso_utc, print_json
from beatd.clock import TEST_OFFSET_ENV, clock_from_env
from beatd.config import Settings, load_settings, redact_url
from beatd.daemon import STORE_RETRY, Daemon
from beatd.errors import BeatdError, NotFound, SchemaError, StoreError
from beatd.http import HttpServer
from beatd.logs import FORMATS, scrub, setup
from beatd.publish import open_publisher
from beatd.store import MEMORY, has_tables, open_store
from beatd.store.base import Store

log = logging.getLogger("beatd")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    run = add_command(
        sub, "run", "run the daemon in the foreground (many may run; one leads)", _run
    )
    run.add_argument(
        "--log-format", choices=FORMATS, default=None, help="log lines as json or text"
    )
    status = add_command(
        sub, "status", "leader, lease, fencing epoch, backlog, database and broker health", _status
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")


def _password(url: str) -> str:
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:
        return ""


def _secrets(settings: Settings) -> list[str]:
    return [_password(settings.database), _password(settings.broker)]


def _open_or_create(url: str) -> Store:
    """Open the store; an empty database first gets beatd's tables.

    An older schema still needs `db upgrade`. The tables are looked for only
    when opening fails, so a normal start connects once, not twice. Safe
    when several instances start at once: the upgrade takes a lock.
    """
    try:
        return open_store(url)
    except SchemaError:
        if url.startswith(MEMORY) or has_tables(url):
            raise
    from beatd import migrate

    _before, after = migrate.upgrade(url)
    log.info("created beatd's tables", extra={"database": redact_url(url), "revision": after})
    return open_store(url)


def _open_store(settings: Settings, stop: threading.Event) -> Store | None:
    """Open the database, retrying while it is unreachable; None if stopped meanwhile."""
    failures = 0
    while not stop.is_set():
        try:
            return _open_or_create(settings.database)
        except SchemaError:
            raise
        except StoreError as exc:
            failures += 1
            if failures == 1:
                log.error(
                    f"cannot open the database, retrying: {scrub(str(exc), _secrets(settings))}"
                )
            stop.wait(STORE_RETRY.delay(failures))
    return None


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    setup(args.log_format or settings.log_format)
    stop = threading.Event()
    daemon: list[Daemon] = []

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if daemon:
            daemon[0].request_stop()

    def on_reload(signum: int, frame: FrameType | None) -> None:
        if daemon:
            daemon[0].request_reload()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    log.info(
        "beatd starting",
        extra={
            "database": redact_url(settings.database),
            "broker": redact_url(settings.broker),
            "config": str(settings.path) if settings.path else None,
        },
    )
    store = _open_store(settings, stop)
    if store is None:
        return EXIT_OK
    publisher = open_publisher(settings.broker)
    http: HttpServer | None = None
    clock = clock_from_env(os.environ)
    if os.environ.get(TEST_OFFSET_ENV):
        log.warning(f"test clock: wall time shifted by the seconds in ${TEST_OFFSET_ENV}")
    try:
        daemon.append(Daemon(settings, store, publisher, clock))
        if stop.is_set():
            daemon[0].request_stop()
        if settings.http:
            http = HttpServer(settings.http, daemon[0].metrics, daemon[0].problems)
            log.info("serving /metrics and /healthz", extra={"http": settings.http})
        return daemon[0].run()
    finally:
        if http is not None:
            http.close()
        publisher.close()
        store.close()


def _health(check: Any, secrets: list[str]) -> str:
    try:
        problem = check()
    except BeatdError as exc:
        problem = str(exc)
    return "ok" if problem is None else f"error: {scrub(str(problem), secrets)}"


LATE_AFTER_LEASES = 2  # status calls fires late past this many leases (a failover takes one)
FILE_SAMPLE = 5  # file schedules status looks for in the database


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


def _database_report(store: Store, settings: Settings) -> dict[str, Any]:
    now = store.db_now()
    lease = store.current()
    leader = None if lease is None else lease.holder
    report: dict[str, Any] = {"backlog": store.backlog()}
    if lease is not None:
        report.update(leader=leader, epoch=lease.epoch, lease_expires=iso_utc(lease.expires_at))
    recording = _late(store.next_due_at(), now, settings, leader)
    publishing = _late(store.next_publish_at(), now, settings, leader)
    report["recording"] = recording if recording == "ok" else f"error: a schedule {recording}"
    report["publishing"] = publishing if publishing == "ok" else f"error: a fire {publishing}"
    report["file"] = _file_loaded(store, settings)
    return report


def _status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    secrets = _secrets(settings)
    report: dict[str, Any] = {
        "leader": None,
        "epoch": None,
        "lease_expires": None,
        "backlog": None,
        "database": "ok",
        "broker": "ok",
        "recording": None,
        "publishing": None,
        "file": None,
        "database_url": redact_url(settings.database),
        "broker_url": redact_url(settings.broker),
    }
    try:
        store = open_store(settings.database)
        try:
            report.update(_database_report(store, settings))
        finally:
            store.close()
    except BeatdError as exc:
        report["database"] = f"error: {scrub(str(exc), secrets)}"
    try:
        publisher = open_publisher(settings.broker)
    except BeatdError as exc:
        report["broker"] = f"error: {scrub(str(exc), secrets)}"
    else:
        try:
            report["broker"] = _health(publisher.check, secrets)
        finally:
            publisher.close()
    if args.json:
        print_json(report)
    else:
        for key, value in report.items():
            print(f"{key + ':':<15}{'-' if value is None else value}")
    checks = ("database", "broker", "recording", "publishing", "file")
    healthy = all(report[key] == "ok" for key in checks)
    sys.stdout.flush()
    return EXIT_OK if healthy else EXIT_FAILURE
