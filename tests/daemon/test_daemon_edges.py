"""The daemon at its edges: HTTP clients that misbehave, reloads that raise, early signals."""

from __future__ import annotations

import io
import json
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from beatd.http import HttpServer
from beatd.logs import setup
from beatd.metrics import Metrics


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """beatd's loggers as `--log-format json` at debug level, into a buffer."""
    stream = io.StringIO()
    setup("json", level=logging.DEBUG, stream=stream)
    try:
        yield stream
    finally:
        root = logging.getLogger("beatd")
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.propagate = True
        root.setLevel(logging.NOTSET)


# -- HTTP ------------------------------------------------------------------------------


def test_a_client_reset_is_one_debug_line_not_a_traceback(
    json_log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    server = HttpServer("127.0.0.1:0", Metrics(), lambda: True)
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
    server = HttpServer("127.0.0.1:0", Metrics(), lambda: True, idle_timeout=0.3)
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
