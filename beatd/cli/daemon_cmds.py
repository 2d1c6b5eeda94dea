"""`beatd run` (the daemon, in the foreground) and `beatd status`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from typing import Any

from beatd.api import Beat
from beatd.cli.main import EXIT_OK, Signals, add_command, one_line
from beatd.cli.output import iso_utc, print_json
from beatd.clock import TEST_OFFSET_ENV, clock_from_env
from beatd.config import Settings, load_settings
from beatd.daemon import STORE_RETRY, Daemon
from beatd.errors import SchemaError, StoreError
from beatd.http import HttpServer
from beatd.logs import FORMATS, setup
from beatd.publish import open_publisher
from beatd.redact import redact
from beatd.store import open_or_create
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
    setup(
        args.log_format or settings.log_format,
        LEVELS[args.log_level],
        urls=(settings.database, settings.broker),
        background=True,
    )
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
            http = HttpServer(settings.http, daemon.metrics, daemon.healthy)
            log.info("serving /metrics and /healthz", extra={"http": settings.http})
        return daemon.run()
    finally:
        if http is not None:
            http.close()
        publisher.close()
        store.close()


def _status(args: argparse.Namespace) -> int:
    with Beat.from_config(args.config) as beat:
        status = beat.status()
    report: dict[str, Any] = {
        "leader": status.leader,
        "epoch": status.epoch,
        "lease_expires": iso_utc(status.lease_expires) if status.lease_expires else None,
        "backlog": status.backlog,
        "instances": [
            {
                "id": i.holder,
                "role": i.role,
                "started_at": iso_utc(i.started_at),
                "last_seen": iso_utc(i.last_seen),
            }
            for i in status.instances
        ],
        "database": status.database,
        "broker": status.broker,
        "database_url": status.database_url,
        "broker_url": status.broker_url,
    }
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
    sys.stdout.flush()
    for problem in status.problems:  # as every command says what is wrong, and exits the same way
        print(f"beatd: {one_line(problem)}", file=sys.stderr)
    return status.exit_code
