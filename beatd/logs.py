"""Structured logs: `json` (one object per line) or `text`, on stderr.

Extra fields passed with `log.info(msg, extra={...})` become keys of the JSON
object (or `key=value` pairs in text). Every line goes through
beatd.redact.redact, with the database and broker URLs' passwords.

A record whose extras hold `EACH` (a list of field dicts) is written as one
line per item: the relay logs a line per fire published, and one record per
crowded instant costs a tenth of a record per fire (making, queueing and
dispatching a record was most of a logged fire's CPU).
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from beatd.redact import redact

FORMATS = ("json", "text")
EACH = "each"  # extras key: one line per item, each with the item's fields
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", EACH}
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _items(record: logging.LogRecord) -> list[dict[str, Any]]:
    """The fields of each line `record` is written as (one line: no fields of its own)."""
    each: list[dict[str, Any]] | None = record.__dict__.get(EACH)
    return [{}] if each is None else each


def _ts(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Formatter(logging.Formatter):
    def __init__(self, urls: Sequence[str] = ()) -> None:
        super().__init__()
        self.urls = tuple(urls)

    def shown(self, text: str) -> str:
        return redact(text, *self.urls)


class JsonFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return "\n".join(self._line({**entry, **item}) for item in _items(record))

    def _line(self, entry: dict[str, Any]) -> str:
        shown = {k: self.shown(v) if isinstance(v, str) else v for k, v in entry.items()}
        return json.dumps(shown, default=lambda v: self.shown(str(v)), ensure_ascii=False)


class TextFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = f"{_ts(record)} {record.levelname:<7} {record.getMessage()}"
        extras = _extras(record)
        lines = []
        for item in _items(record):
            pairs = " ".join(f"{k}={v}" for k, v in {**extras, **item}.items())
            lines.append(f"{head} {pairs}" if pairs else head)
        text = "\n".join(lines)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return self.shown(text)


def setup(
    fmt: str = "text",
    level: int = logging.INFO,
    stream: TextIO | None = None,
    urls: Sequence[str] = (),
    *,
    background: bool = False,
) -> Callable[[], None]:
    """Route the `beatd` loggers to `stream` (stderr) in the chosen format.

    Every line is passed through redact(), with the passwords of `urls`.
    With `background` (the daemon), a logging thread formats and writes the
    lines, so a loop that logs a line per fire only queues it (a 10,000-fire
    burst spent ~0.6 s writing lines between its publishes). Returns what
    writes out everything queued and stops that thread (also run at exit).
    """
    handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(urls) if fmt == "json" else TextFormatter(urls))
    if background:
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(lines, handler)
        listener.start()
        stopped: list[bool] = []

        def drain() -> None:
            if not stopped:
                stopped.append(True)
                listener.stop()

        atexit.register(drain)  # before logging's own exit hook: nothing is lost
        handler = _ThreadQueue(lines)
    else:
        drain = _nothing
    root = logging.getLogger("beatd")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return drain


def _nothing() -> None:
    pass


class _ThreadQueue(logging.handlers.QueueHandler):
    """Queue the record itself: the listener, in this process, formats it once.

    The stock prepare() formats and copies every record so it could cross to
    another process; here that was a quarter of a logged fire's cost.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record
