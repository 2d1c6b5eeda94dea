"""`/metrics` (Prometheus text) and `/healthz` from a stdlib ThreadingHTTPServer.

A connection silent for IDLE_TIMEOUT is closed (no thread waits on a client
forever); a client that resets or goes away costs one debug line, never a
traceback on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from beatd.errors import BeatdError, ConfigError
from beatd.metrics import Metrics

log = logging.getLogger("beatd.http")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
IDLE_TIMEOUT = 10.0  # seconds a connection may stay silent before it is closed


def parse_bind(value: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464', ':9464' or '9464' (host defaults to 127.0.0.1)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"http: expected host:port, got {value!r}")
    return host, int(port)


class HttpServer:
    """Serves in a daemon thread until close()."""

    def __init__(
        self,
        bind: str,
        metrics: Metrics,
        healthy: Callable[[], bool],
        *,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        host, port = parse_bind(bind)

        class Handler(BaseHTTPRequestHandler):
            timeout = idle_timeout

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, metrics.render(), CONTENT_TYPE)
                elif path == "/healthz":
                    ok = healthy()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
                else:
                    self._reply(404, b"not found\n")

            def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug(format % args)

        try:
            self.server = _Server((host, port), Handler)
        except OSError as exc:  # port taken, address not local, host unknown
            raise BeatdError(f"http: cannot listen on {bind}: {exc.strerror or exc}") from None
        self.address = self.server.server_address
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="beatd-http", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.address[1])

    def close(self) -> None:
        stopping = threading.Thread(target=self.server.shutdown, daemon=True)
        stopping.start()
        while stopping.is_alive():  # wake the serving loop now, not at its next 0.5 s poll
            self._knock()
            stopping.join(0.05)
        self.server.server_close()
        self._thread.join(timeout=5)

    def _knock(self) -> None:
        host, port = str(self.address[0]), int(self.address[1])
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: Any) -> None:
        """Called with the exception being handled: the stdlib prints its traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client reset, went away or stayed silent
            log.debug(f"http: client {client_address[0]}: {type(exc).__name__}: {exc}")
        else:
            log.error("http: request failed", exc_info=True)
