"""Serve the console with waitress (a pure-Python, threaded WSGI server) until SIGTERM."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from waitress.server import create_server

from beatd.api import Beat
from beatd.errors import BeatdError
from beatd.web.app import create_app

log = logging.getLogger("beatd.web")
THREADS = 4  # requests served at once; each holds at most one database connection


def serve(beat: Beat, host: str, port: int, token: str | None) -> None:
    """Listen on host:port (port 0: any free one, logged) and serve until SIGTERM or ^C."""
    try:
        beat.page(limit=1)  # opens the database now, before request threads share the Beat
    except BeatdError:
        pass  # each page says what is wrong, and the next request tries again
    server = create_server(
        create_app(beat, token), host=host, port=port, threads=THREADS, ident="beatd"
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)  # server.run() ends its loop on SystemExit

    signal.signal(signal.SIGTERM, stop)
    where = host if ":" not in host else f"[{host}]"
    log.info(
        "serving the console",
        extra={
            "url": f"http://{where}:{getattr(server, 'effective_port', port)}/",
            "auth": "token" if token else "none (loopback only)",
        },
    )
    server.run()
