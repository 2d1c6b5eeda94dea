"""The AMQP 0-9-1 (RabbitMQ) publisher, on pika.

Batched confirms
    With ``BlockingConnection.confirm_delivery()`` every ``basic_publish``
    waits for its own confirm (about 1,700 msgs/s on a small machine). Here
    each connection is a ``pika.SelectConnection`` driven by its own I/O
    thread. ``publish`` hands the whole batch to that thread through
    ``ioloop.add_callback_threadsafe`` (the one thread-safe IOLoop method) and
    waits on an Event. The I/O thread writes the batch in chunks, numbering
    delivery tags from 1 as the broker does on a confirm-mode channel, and
    settles them from ``Basic.Ack``/``Basic.Nack`` frames, which may cover a
    range (``multiple=True``). RabbitMQ sends a ``basic.return`` (unroutable
    with ``mandatory``) *before* the ack of the same message, so the return
    marks the message and its ack settles it as RETURNED. The running ioloop
    also answers heartbeats while the relay is idle, which a
    BlockingConnection would not.

Declarations, once per connection
    A message's ``queue`` (default exchange only) is declared passively; only
    when the broker answers 404 is it declared durable, classic, without
    arguments, so a quorum queue made with other arguments is never
    redeclared. A non-empty exchange is checked passively before each batch
    until it is found; while missing, its messages are RETURNED ("unroutable:
    exchange 'x' not found"), like any message nothing routes, and the rest
    of the batch goes out. (Not a BrokerError: one misconfigured schedule
    must not hold back every other fire; not NACKED: the relay would retry
    it at the head of the outbox, backing off everyone.) Declarations use a
    second channel, because a failed passive declare closes its channel.

Errors (all pika exceptions become BrokerError in ``_mapped``)
    Transient, raised as BrokerError and retried by the caller: connection
    refused, reset or timed out; broker closed the connection (restart,
    ``CONNECTION_FORCED``, missed heartbeats); channel closed; no confirm
    progress within ``confirm_timeout`` (a blocked connection). The next
    ``publish`` reconnects at once; each failed connection attempt doubles
    the wait (``RetryPolicy``), during which ``publish`` fails fast without
    touching the network. Authentication and virtual-host errors are raised
    the same way but need an operator. Per message, never raised: RETURNED
    (unroutable, missing exchange, or a message pika cannot encode), NACKED
    (``basic.nack``: the broker refused it, e.g. a full queue with
    ``overflow=reject-publish``), EXPIRED (``expires_at`` reached first).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions
import pika.frame
import pika.spec

from beatd.errors import BrokerError, ConfigError
from beatd.publish import mask_url
from beatd.publish.base import Message, Result, Status
from beatd.publish.messages import expired_reason
from beatd.publish.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

_CHUNK = 256  # messages written per ioloop turn, so acks are read while we write
_FRAME_OVERHEAD = pika.spec.FRAME_HEADER_SIZE + pika.spec.FRAME_END_SIZE
_PREPARED_CHANNEL = 1  # the confirm channel: the first one opened on every connection
_PREPARED_BODY = pika.spec.FRAME_MIN_SIZE - _FRAME_OVERHEAD  # fits any negotiated frame_max
_PREPARED_MAX = 30_000  # fires prepared, not published yet (withdrawn ones age out)
_ENCODE_ERRORS = (
    pika.exceptions.UnsupportedAMQPFieldException,
    pika.exceptions.ShortStringTooLong,
    struct.error,
    TypeError,
    ValueError,
    OverflowError,
)


class AmqpPublisher:
    """Publisher over one lazily opened connection; safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        confirm_timeout: float = 10.0,
        connect_timeout: float = 20.0,
        retry: RetryPolicy | None = None,
        name: str = "beatd",
    ) -> None:
        """`confirm_timeout`: seconds a batch may go without any progress.

        `name` is the ``connection_name`` RabbitMQ shows for the connection.
        Raises ConfigError (password masked) when `url` cannot be parsed.
        """
        self.name = name
        self._safe_url = mask_url(url)
        try:
            self._params = pika.URLParameters(_kombu_vhost(url))
        except (ValueError, TypeError, pika.exceptions.AMQPError) as exc:
            raise ConfigError(f"invalid broker URL {self._safe_url!r}: {exc}") from None
        properties = dict(self._params.client_properties or {})
        properties.setdefault("connection_name", name)
        self._params.client_properties = properties
        self._secret = str(getattr(self._params.credentials, "password", "") or "")
        self._confirm_timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._backoff = Backoff(retry or RetryPolicy())
        self._lock = threading.Lock()  # one batch at a time
        self._link: _Link | None = None
        self._prepared: dict[str, bytes] = {}  # fire id -> its frames, marshalled ahead

    def prepare(self, messages: Sequence[Message]) -> None:
        """Marshal ahead the frames of fires to be published at their instant.

        Their ``timestamp`` is then their publish instant; messages with a
        TTL are left to publish(), which counts it from the real moment.
        """
        prepared = self._prepared
        for message in messages:
            if message.expires_at is None:
                props = _properties(message, message.publish_at, None)
                with contextlib.suppress(*_ENCODE_ERRORS):  # publish() reports it
                    prepared[message.fire_id] = _frames(
                        _PREPARED_CHANNEL, message, props, _PREPARED_BODY
                    )
        if len(prepared) > _PREPARED_MAX:
            for fire_id in list(prepared)[: _PREPARED_MAX // 2]:
                del prepared[fire_id]

    def publish(self, messages: Sequence[Message], now: datetime) -> list[Result]:
        """See Publisher.publish; raises BrokerError, never a pika exception."""
        batch = _Batch(messages)
        for i, message in enumerate(messages):
            ttl = _ttl_ms(message, now)
            if ttl is not None and ttl <= 0:
                batch.settle(i, Result(message.fire_id, Status.EXPIRED, expired_reason(message)))
            else:
                batch.properties[i] = _properties(message, now, ttl)
                batch.frames[i] = self._prepared.pop(message.fire_id, None)
        if batch.remaining == 0:
            return batch.final()
        with self._lock, self._mapped("publish"):
            try:
                return self._run(batch)
            except _Unsent:
                # The connection went away while idle and nothing was written:
                # reconnecting now is safe and saves the relay a retry.
                return self._run(batch)

    def _run(self, batch: _Batch) -> list[Result]:
        try:
            return self._connected().run(batch, self._confirm_timeout)
        except BrokerError:
            self._drop()
            raise

    def check(self) -> str | None:
        """None when connected (or a connection can be made now), else why not."""
        link = self._link
        if link is not None and link.alive:
            return None
        with self._lock:
            try:
                with self._mapped("check"):
                    self._connected()
            except BrokerError as exc:
                return str(exc)
        return None

    def close(self) -> None:
        """Close the connection, if any; idempotent. A later publish reconnects."""
        with self._lock:
            self._drop()

    def _connected(self) -> _Link:
        if self._link is not None and self._link.alive:
            return self._link
        self._drop()
        wait = self._backoff.remaining()
        if wait > 0:
            raise BrokerError(
                f"broker {self._safe_url} unreachable ({self._backoff.last_error}); "
                f"next attempt in {wait:.1f}s"
            )
        link = _Link(self._params, self._clean)
        try:
            link.start(self._connect_timeout)
        except BrokerError as exc:
            link.close()
            self._backoff.failed(str(exc))
            raise BrokerError(f"cannot connect to {self._safe_url}: {exc}") from None
        self._backoff.succeeded()
        self._link = link
        return link

    def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def _clean(self, text: str) -> str:
        """One line, with no password in it (our URL's user name stays readable)."""
        parts = mask_url(" ".join(text.split())).split(self._safe_url)
        if self._secret:
            parts = [part.replace(self._secret, "***") for part in parts]
        return self._safe_url.join(parts)

    @contextlib.contextmanager
    def _mapped(self, action: str) -> Iterator[None]:
        """The boundary: whatever pika (or the socket) raises leaves as BrokerError."""
        try:
            yield
        except BrokerError as exc:
            raise BrokerError(self._clean(str(exc))) from None
        except (pika.exceptions.AMQPError, OSError, RuntimeError) as exc:
            self._drop()
            raise BrokerError(self._clean(f"{action} failed: {_describe(exc)}")) from None


def _kombu_vhost(url: str) -> str:
    """Read Celery's ``amqp://host//`` as the vhost "/", as kombu does (pika: "")."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/")) if parts.path == "//" else url


def _ttl_ms(message: Message, now: datetime) -> int | None:
    if message.expires_at is None:
        return None
    return math.ceil((message.expires_at - now).total_seconds() * 1000)


def _properties(message: Message, now: datetime, ttl: int | None) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=dict(message.headers),
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=message.priority,
        correlation_id=message.fire_id,  # Celery reads the task id from here too
        message_id=message.fire_id,
        timestamp=int(now.timestamp()),
        expiration=str(ttl) if ttl is not None else None,
    )


def _frames(channel: int, message: Message, props: pika.BasicProperties, body_max: int) -> bytes:
    """The frames basic_publish would write (method, header, body), as one buffer."""
    body = message.body
    frames = [
        _publish_method(channel, message.exchange, message.routing_key),
        pika.frame.Header(channel, len(body), props).marshal(),
    ]
    frames += (
        pika.frame.Body(channel, body[at : at + body_max]).marshal()
        for at in range(0, len(body), body_max)
    )
    return b"".join(frames)


@functools.lru_cache(maxsize=1024)
def _publish_method(channel: int, exchange: str, routing_key: str) -> bytes:
    method = pika.spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True)
    marshalled: bytes = pika.frame.Method(channel, method).marshal()
    return marshalled


def _describe(exc: BaseException) -> str:
    """One line for a pika exception; pika's own str() is often empty or a tuple."""
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "authentication failed (check the user name and password)"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return "access to the virtual host refused"
    # pika.adapters.utils.connection_workflow wraps the cause: a tuple of
    # attempts (`exceptions`) or the error of one bring-up phase (`exception`).
    errors = getattr(exc, "exceptions", None)
    if isinstance(errors, tuple) and errors and isinstance(errors[-1], BaseException):
        return _describe(errors[-1])
    cause = getattr(exc, "exception", None)
    if isinstance(cause, BaseException):
        return _describe(cause)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "AMQPConnectorStackTimeout":
        return "timed out"
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker | pika.exceptions.ChannelClosed):
        return f"closed by the broker: {exc.reply_code} {exc.reply_text}"
    if isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args:
        inner = exc.args[0]
        if isinstance(inner, BaseException):
            return _describe(inner)
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


class _Unsent(BrokerError):
    """The link was already dead when a batch was handed to it: nothing was sent."""


@dataclass(eq=False)
class _Batch:
    """One publish call. Written by the I/O thread; read by the caller after `done`."""

    messages: Sequence[Message]
    properties: list[pika.BasicProperties | None] = field(default_factory=list)
    frames: list[bytes | None] = field(default_factory=list)  # prepared on channel 1
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


class _Link:
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
        self._batch: _Batch | None = None
        self._conn: Any = None
        self._confirm_ch: Any = None
        self._declare_ch: Any = None
        self._tag = 0  # last delivery tag used on the confirm channel
        self._low = 1  # no unsettled tag is below this
        self._pending: dict[int, tuple[_Batch, int]] = {}
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
        self._thread.start()
        if not self._opened.wait(timeout):
            self._die(f"connection not open after {timeout:g}s")
        if self._dead is not None:
            raise BrokerError(self._dead)

    def run(self, batch: _Batch, confirm_timeout: float) -> list[Result]:
        with self._lock:
            if self._dead is not None:
                raise _Unsent(self._dead)
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
            self._die(_describe(exc))
        finally:
            self._die("connection closed")

    def _io_guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a callback; any error kills the link instead of the I/O thread."""
        try:
            fn(*args)
        except Exception as exc:
            log.warning("AMQP I/O callback failed", exc_info=True)
            self._die(_describe(exc))
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
        self._die(_describe(exc))
        conn.ioloop.stop()

    def _io_on_closed(self, conn: Any, exc: BaseException) -> None:
        self._die(f"connection lost: {_describe(exc)}")
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
            self._die(f"publish channel {_describe(exc)}")
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

    def _io_start(self, batch: _Batch) -> None:
        if batch.done.is_set():
            return
        self._checks = [c for c in batch.checks() if c not in self._known]
        self._io_next_check(batch)

    def _io_next_check(self, batch: _Batch) -> None:
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
        except _ENCODE_ERRORS as exc:  # e.g. a name over 255 bytes; basic_publish says so
            log.warning("cannot check %s %r: %s", kind, name, _describe(exc))
            self._io_check_done(batch)

    def _io_check_done(self, batch: _Batch) -> None:
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
            log.warning("cannot check %s %r: %s", kind, name, self._clean(_describe(exc)))
            self._known.add(check)
        self._check = None
        batch.progress += 1
        self._io_open_declare_channel(lambda: self._io_next_check(batch))

    def _io_write(self, batch: _Batch, start: int) -> None:
        if batch.done.is_set():
            return
        if not self._confirm_ch.is_open:
            raise pika.exceptions.ChannelWrongStateError("publish channel is not open")
        end = min(start + _CHUNK, len(batch.messages))
        channel = self._confirm_ch.channel_number
        body_max = self._conn.params.frame_max - _FRAME_OVERHEAD
        frames: list[bytes] = []
        for i in range(start, end):
            props = batch.properties[i]
            if batch.results[i] is not None or props is None:
                continue
            message = batch.messages[i]
            missing = batch.missing.get(message.exchange)
            if missing is not None:
                batch.settle(i, Result(message.fire_id, Status.RETURNED, missing))
                continue
            marshalled = batch.frames[i] if channel == _PREPARED_CHANNEL else None
            try:
                if marshalled is None:
                    marshalled = _frames(channel, message, props, body_max)
            except _ENCODE_ERRORS as exc:  # marshalled before anything is written
                reason = f"cannot encode message: {_describe(exc)}"
                batch.settle(i, Result(message.fire_id, Status.RETURNED, reason))
                continue
            frames.append(marshalled)
            self._tag += 1
            self._pending[self._tag] = (batch, i)
            batch.by_id.setdefault(message.fire_id, []).append(i)
        if frames:
            # basic_publish hands every frame (three per message) to its own
            # send(): a third of this thread's time in a 10,000-fire burst.
            # pika has no public call for frames marshalled here with its own
            # classes, so the chunk goes out through the one it uses itself.
            self._conn._output_marshaled_frames([b"".join(frames)])
        if end < len(batch.messages):
            self._conn.ioloop.call_later(0, self._cb(self._io_write, batch, end))
            return
        batch.written = True
        self._io_maybe_finish(batch)

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

    def _io_maybe_finish(self, batch: _Batch) -> None:
        if batch.written and batch.remaining == 0:
            with self._lock:
                if self._batch is batch:
                    self._batch = None
            batch.done.set()
