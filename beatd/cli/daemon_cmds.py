"""`beatd run` (the daemon, in the foreground) and `beatd status`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit

from beatd.cli.main import EXIT_FAILURE, EXIT_OK, add_command
from beatd.cli.output import iso_utc, print_json
from beatd.clock import TEST_OFFSET_ENV, clock_from_env
from beatd.config import Settings, load_settings, redact_url
from beatd.daemon import STORE_RETRY, Daemon
from beatd.errors import BeatdError, SchemaError, StoreError
from beatd.http import HttpServer
from beatd.logs import FORMATS, scrub, setup
from beatd.model import Lease
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
            http = HttpServer(settings.http, daemon[0].metrics, daemon[0].healthy)
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


def _instances(store: Store, lease: Lease | None, ttl: timedelta) -> list[dict[str, Any]]:
    """Every process seen within two leases: its id, role and when it was last seen."""
    seen = store.instances(store.db_now() - 2 * max(ttl, timedelta(seconds=2)))
    return [
        {
            "id": i.holder,
            "role": "leader" if lease is not None and i.token == lease.token else "standby",
            "started_at": iso_utc(i.started_at),
            "last_seen": iso_utc(i.last_seen),
        }
        for i in seen
    ]


def _status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    secrets = _secrets(settings)
    report: dict[str, Any] = {
        "leader": None,
        "epoch": None,
        "lease_expires": None,
        "backlog": None,
        "instances": [],
        "database": "ok",
        "broker": "ok",
        "database_url": redact_url(settings.database),
        "broker_url": redact_url(settings.broker),
    }
    try:
        store = open_store(settings.database)
        try:
            lease = store.current()
            if lease is not None:
                report.update(
                    leader=lease.holder, epoch=lease.epoch, lease_expires=iso_utc(lease.expires_at)
                )
            report["backlog"] = store.backlog()
            report["instances"] = _instances(store, lease, settings.lease)
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
            if key == "instances":
                value = (
                    ", ".join(f"{i['id']} ({i['role']}, seen {i['last_seen']})" for i in value)
                    or None
                )
            print(f"{key + ':':<15}{'-' if value is None else value}")
    healthy = report["database"] == "ok" and report["broker"] == "ok"
    sys.stdout.flush()
    return EXIT_OK if healthy else EXIT_FAILURE
