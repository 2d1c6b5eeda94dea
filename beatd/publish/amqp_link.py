"""One AMQP connection and its I/O thread: batches written, confirms settled.

Every ``Link`` method whose name starts with ``_io`` runs on the connection's
own thread (a ``pika.SelectConnection`` loop); ``AmqpPublisher`` hands it a
``Batch`` and waits on the batch's Event. See ``beatd.publish.amqp`` for the
protocol: delivery tags, returns before acks, declarations, errors.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec

from beatd.errors import BrokerError
from beatd.model import Message
from beatd.publish import amqp_wire
from beatd.publish.amqp_wire import (
    ENCODE_ERRORS,
    PREPARED_CHANNEL,
    describe,
    header_frame,
    marshal,
    properties,
)
from beatd.publish.base import Result, Status

log = logging.getLogger("beatd.publish.amqp")

CHUNK = 256  # messages written per ioloop turn, so acks are read while we write


class Unsent(BrokerError):
    """The link was already dead when a batch was handed to it: nothing was sent."""


@dataclass(eq=False)
class Batch:
    """One publish call. Written by the I/O thread; read by the caller after `done`."""

    messages: Sequence[Message]
    properties: list[pika.BasicProperties | None] = field(default_factory=list)
    frames: list[bytes | None] = field(default_factory=list)  # prepared on channel 1 instead
    results: list[Result | None] = field(default_factory=list)
    remaining: int = 0
    progress: int = 0  # checks done + messages settled; the timeout watches it
    written: bool = False
    returned: dict[int, str] = field(default_factory=dict)
    by_id: dict[str, list[int]] = field(default_factory=dict)  # sent, unsettled
    missing: dict[str, str] = field(default_factory=dict)  # exchange -> reason
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.properties = [None] * len(self.messages)
        self.frames = [None] * len(self.messages)
        self.results = [None] * len(self.messages)
        self.remaining = len(self.messages)

    def settle(self, index: int, result: Result) -> None:
        if self.results[index] is None:
            self.results[index] = result
            self.remaining -= 1
            self.progress += 1

    def checks(self) -> list[tuple[str, str]]:
        wanted: dict[tuple[str, str], None] = {}
        for i, message in enumerate(self.messages):
            if self.results[i] is None:
                if message.exchange:
                    wanted[("exchange", message.exchange)] = None
                if message.queue:
                    wanted[("queue", message.queue)] = None
        return list(wanted)

    def final(self) -> list[Result]:
        return [r for r in self.results if r is not None]


class Link:
    """One connection and its two channels, owned by one I/O thread.

    Every method whose name starts with ``_io`` runs on that thread; the rest
    is the caller's side (start, run, close, alive).
    """

    def __init__(self, params: pika.URLParameters, clean: Callable[[str], str]) -> None:
        self._params = params
        self._clean = clean
        self._lock = threading.Lock()
        self._opened = threading.Event()
        self._dead: str | None = None
        self._batch: Batch | None = None
        self._conn: Any = None
        self._confirm_ch: Any = None
        self._declare_ch: Any = None
        self._tag = 0  # last delivery tag used on the confirm channel
        self._low = 1  # no unsettled tag is below this
        self._pending: dict[int, tuple[Batch, int]] = {}
        self._known: set[tuple[str, str]] = set()
        self._checks: list[tuple[str, str]] = []
        self._check: tuple[str, str] | None = None
        self._declaring = False
        self._thread = threading.Thread(target=self._io_main, name="beatd-amqp-io", daemon=True)

    # --- caller side ------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._dead is None and self._opened.is_set() and self._thread.is_alive()

    def start(self, timeout: float) -> None:
        if self._dead is not None:  # closed before it began
            raise BrokerError(self._dead)
        self._thread.start()
        if not self._opened.wait(timeout):
            self._die(f"connection not open after {timeout:g}s")
        if self._dead is not None:
            raise BrokerError(self._dead)

    def run(self, batch: Batch, confirm_timeout: float) -> list[Result]:
        with self._lock:
            if self._dead is not None:
                raise Unsent(self._dead)
            self._batch = batch
        self._conn.ioloop.add_callback_threadsafe(self._cb(self._io_start, batch))
        seen = 0
        while not batch.done.wait(confirm_timeout):
            if batch.progress == seen:
                self._die(
                    f"no confirm from the broker within {confirm_timeout:g}s "
                    f"({len(batch.messages) - batch.remaining} of {len(batch.messages)} settled)"
                )
                break
            seen = batch.progress
        if batch.error is not None:
            raise BrokerError(batch.error)
        return batch.final()

    def close(self) -> None:
        self._die("closed")
        if self._thread.is_alive():
            with contextlib.suppress(Exception):  # the loop may be stopping on its own
                self._conn.ioloop.add_callback_threadsafe(self._io_close)
            self._thread.join(10)
        if self._conn is not None and not self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._conn.ioloop.close()

    def _die(self, reason: str) -> None:
        """Mark the link dead (first reason wins) and fail the batch in flight."""
        with self._lock:
            if self._dead is None:
                self._dead = self._clean(reason)
            batch, self._batch = self._batch, None
        if batch is not None and not batch.done.is_set():
            batch.error = self._dead
            batch.done.set()
        self._opened.set()

    # --- I/O thread: connection and channels --------------------------------

    def _io_main(self) -> None:
        try:
            self._conn = pika.SelectConnection(
                self._params,
                on_open_callback=self._io_on_open,
                on_open_error_callback=self._io_on_open_error,
                on_close_callback=self._io_on_closed,
            )
            self._conn.ioloop.start()
        except Exception as exc:  # pika raising out of its own loop: the link is gone
            self._die(describe(exc))
        finally:
            self._die("connection closed")

    def _io_guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a callback; any error kills the link instead of the I/O thread."""
        try:
            fn(*args)
        except Exception as exc:
            log.warning("AMQP I/O callback failed", exc_info=True)
            self._die(describe(exc))
            self._io_close()

    def _cb(self, fn: Callable[..., None], *args: Any) -> Callable[..., None]:
        """A pika callback that drops pika's arguments and calls fn(*args) guarded."""
        return lambda *_ignored: self._io_guard(fn, *args)

    def _io_close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if conn.is_closed:
            conn.ioloop.stop()
        elif not conn.is_closing:
            conn.close()

    def _io_on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=lambda ch: self._io_guard(self._io_on_confirm_channel, ch))

    def _io_on_open_error(self, conn: Any, exc: BaseException) -> None:
        self._die(describe(exc))
        conn.ioloop.stop()

    def _io_on_closed(self, conn: Any, exc: BaseException) -> None:
        self._die(f"connection lost: {describe(exc)}")
        conn.ioloop.stop()

    def _io_on_confirm_channel(self, ch: Any) -> None:
        self._confirm_ch = ch
        ch.add_on_close_callback(self._io_on_confirm_channel_closed)
        ch.add_on_return_callback(
            lambda _ch, method, props, _body: self._io_guard(self._io_on_return, method, props)
        )
        ch.confirm_delivery(
            lambda frame: self._io_guard(self._io_on_confirm, frame),
            callback=self._cb(self._io_open_declare_channel, self._opened.set),
        )

    def _io_on_confirm_channel_closed(self, _ch: Any, exc: BaseException) -> None:
        if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
            self._die(f"publish channel {describe(exc)}")
            self._io_close()
        # Otherwise the connection is closing and _io_on_closed says why.

    def _io_open_declare_channel(self, then: Callable[[], None]) -> None:
        def opened(ch: Any) -> None:
            self._declare_ch = ch
            ch.add_on_close_callback(
                lambda _ch, exc: self._io_guard(self._io_on_declare_channel_closed, exc)
            )
            self._io_guard(then)

        self._conn.channel(on_open_callback=opened)

    # --- I/O thread: a batch ------------------------------------------------

    def _io_start(self, batch: Batch) -> None:
        if batch.done.is_set():
            return
        self._checks = [c for c in batch.checks() if c not in self._known]
        self._io_next_check(batch)

    def _io_next_check(self, batch: Batch) -> None:
        if batch.done.is_set():
            return
        if not self._checks:
            self._io_write(batch, 0)
            return
        kind, name = self._check = self._checks.pop(0)
        self._declaring = False
        done = self._cb(self._io_check_done, batch)
        try:
            if kind == "exchange":
                self._declare_ch.exchange_declare(name, passive=True, callback=done)
            else:
                self._declare_ch.queue_declare(name, passive=True, callback=done)
        except ENCODE_ERRORS as exc:  # e.g. a name over 255 bytes; basic_publish says so
            log.warning("cannot check %s %r: %s", kind, name, describe(exc))
            self._io_check_done(batch)

    def _io_check_done(self, batch: Batch) -> None:
        assert self._check is not None
        self._known.add(self._check)
        self._check = None
        batch.progress += 1
        self._io_next_check(batch)

    def _io_on_declare_channel_closed(self, exc: BaseException) -> None:
        if not isinstance(exc, pika.exceptions.ChannelClosedByBroker):
            return  # the connection is closing; _io_on_closed handles it
        batch, check = self._batch, self._check
        if batch is None or check is None:
            self._io_open_declare_channel(lambda: None)
            return
        kind, name = check
        if exc.reply_code == 404 and kind == "queue" and not self._declaring:
            self._declaring = True
            done = self._cb(self._io_check_done, batch)
            self._io_open_declare_channel(
                lambda: self._declare_ch.queue_declare(name, durable=True, callback=done)
            )
            return
        if exc.reply_code == 404 and kind == "exchange":
            batch.missing[name] = f"unroutable: exchange {name!r} not found"
        else:
            # No permission to declare, or a race with another declarer: publish
            # anyway; an unroutable message still comes back as RETURNED.
            log.warning("cannot check %s %r: %s", kind, name, self._clean(describe(exc)))
            self._known.add(check)
        self._check = None
        batch.progress += 1
        self._io_open_declare_channel(lambda: self._io_next_check(batch))

    def _io_write(self, batch: Batch, start: int) -> None:
        if batch.done.is_set():
            return
        if not self._confirm_ch.is_open:
            raise pika.exceptions.ChannelWrongStateError("publish channel is not open")
        end = min(start + CHUNK, len(batch.messages))
        output = amqp_wire.marshalled_output(self._conn)
        chunk: list[bytes] = []
        for i in range(start, end):
            if batch.results[i] is not None:
                continue
            message = batch.messages[i]
            missing = batch.missing.get(message.exchange)
            if missing is not None:
                batch.settle(i, Result(message.fire_id, Status.RETURNED, missing))
                continue
            try:  # marshalled (and checked against frame_max) before anything is written
                if output is not None:
                    chunk.append(self._io_frames(batch, i))
                else:
                    self._io_basic_publish(batch, i)
            except ENCODE_ERRORS as exc:
                reason = f"cannot be sent: {describe(exc)}"
                batch.settle(i, Result(message.fire_id, Status.FAILED, reason))
                continue
            self._tag += 1
            self._pending[self._tag] = (batch, i)
            batch.by_id.setdefault(message.fire_id, []).append(i)
        if chunk and output is not None:
            # basic_publish hands every frame (three per message) to its own
            # send(): a third of this thread's time in a 10,000-fire burst.
            # pika has no public call for frames marshalled here with its own
            # classes, so the chunk goes out through the one it uses itself.
            output([b"".join(chunk)])
        if end < len(batch.messages):
            self._conn.ioloop.call_later(0, self._cb(self._io_write, batch, end))
            return
        batch.written = True
        self._io_maybe_finish(batch)

    def _io_props(self, batch: Batch, i: int) -> pika.BasicProperties:
        message = batch.messages[i]
        return batch.properties[i] or properties(message, message.publish_at, None)

    def _io_frames(self, batch: Batch, i: int) -> bytes:
        channel = self._confirm_ch.channel_number
        prepared = batch.frames[i] if channel == PREPARED_CHANNEL else None
        if prepared is not None:  # marshalled to fit any frame_max
            return prepared
        frame_max = self._conn.params.frame_max
        return marshal(channel, batch.messages[i], self._io_props(batch, i), frame_max)

    def _io_basic_publish(self, batch: Batch, i: int) -> None:
        """The public path, for a pika without the private writer: slower, same frames."""
        message, props = batch.messages[i], self._io_props(batch, i)
        header_frame(self._confirm_ch.channel_number, message, props, self._conn.params.frame_max)
        self._confirm_ch.basic_publish(
            message.exchange, message.routing_key, message.body, props, mandatory=True
        )

    def _io_on_return(self, method: Any, props: Any) -> None:
        batch = self._batch
        if batch is None:
            return
        reason = (
            f"unroutable: {method.reply_text} "
            f"(exchange {method.exchange!r}, routing key {method.routing_key!r})"
        )
        for i in batch.by_id.get(props.message_id, ()):
            if i not in batch.returned:
                batch.returned[i] = reason
                return

    def _io_on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tag = method.delivery_tag
        if method.multiple:
            for t in range(self._low, (tag or self._tag) + 1):
                self._io_settle(t, acked)
        else:
            self._io_settle(tag, acked)
        while self._low <= self._tag and self._low not in self._pending:
            self._low += 1

    def _io_settle(self, tag: int, acked: bool) -> None:
        entry = self._pending.pop(tag, None)
        if entry is None:
            return
        batch, i = entry
        fid = batch.messages[i].fire_id
        batch.by_id[fid].remove(i)
        if not acked:
            result = Result(fid, Status.NACKED, "the broker nacked the message")
        elif i in batch.returned:
            result = Result(fid, Status.RETURNED, batch.returned.pop(i))
        else:
            result = Result(fid, Status.CONFIRMED)
        batch.settle(i, result)
        self._io_maybe_finish(batch)

    def _io_maybe_finish(self, batch: Batch) -> None:
        if batch.written and batch.remaining == 0:
            with self._lock:
                if self._batch is batch:
                    self._batch = None
            batch.done.set()
