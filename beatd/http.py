"""`/metrics` (Prometheus text) and `/healthz` from a stdlib ThreadingHTTPServer."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from beatd.errors import BeatdError, ConfigError
from beatd.metrics import Metrics

log = logging.getLogger("beatd.http")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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

    def __init__(self, bind: str, metrics: Metrics, problems: Callable[[], list[str]]) -> None:
        """`problems` says why the daemon is unhealthy, one line each (none: healthy)."""
        host, port = parse_bind(bind)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, metrics.render(), CONTENT_TYPE)
                elif path == "/healthz":
                    found = problems()
                    body = (
                        "".join(f"{line}\n" for line in ["unhealthy", *found]) if found else "ok\n"
                    )
                    self._reply(503 if found else 200, body.encode())
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
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
