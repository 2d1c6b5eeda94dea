"""The AMQP 0-9-1 (RabbitMQ) publisher, on pika.

This module is the caller's side; one connection and its I/O thread are
``amqp_link.Link``, and properties, frames and error lines ``amqp_wire``.

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
    (unroutable, missing exchange), FAILED (pika cannot encode it, or its
    header frame is over the connection's frame_max, or its TTL over the 10
    years RabbitMQ takes: any of these would close the connection or channel
    for everyone, so it is never written), NACKED (``basic.nack``: the broker
    refused it, e.g. a full queue with ``overflow=reject-publish``), EXPIRED
    (``expires_at`` reached first).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions

from beatd.errors import BrokerError, ConfigError
from beatd.model import Message
from beatd.publish.amqp_link import Batch, Link, Unsent
from beatd.publish.amqp_wire import (
    ENCODE_ERRORS,
    PREPARED_CHANNEL,
    PREPARED_FRAME_MAX,
    describe,
    marshal,
    properties,
    ttl_ms,
)
from beatd.publish.base import Result, Status
from beatd.publish.messages import expired_reason
from beatd.publish.retry import Backoff, RetryPolicy
from beatd.redact import redact

_PREPARED_MAX = 30_000  # fires prepared, not published yet (withdrawn ones age out)


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
        self._url = url
        self._safe_url = redact(url)
        try:
            self._params = pika.URLParameters(_kombu_vhost(url))
        except Exception as exc:  # pika parses ssl_options with literal_eval and loads keys
            reason = self._clean(str(exc) or type(exc).__name__)
            raise ConfigError(f"invalid broker URL {self._safe_url!r}: {reason}") from None
        client = dict(self._params.client_properties or {})
        client.setdefault("connection_name", name)
        self._params.client_properties = client
        self._confirm_timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._backoff = Backoff(retry or RetryPolicy())
        self._lock = threading.Lock()  # one batch at a time
        self._link: Link | None = None
        self._opening: Link | None = None  # being connected, under the lock
        # fire id -> (the message, its frames marshalled ahead): only that very object
        # uses them, never a fire redefined since (same id, read afresh from the outbox)
        self._prepared: dict[str, tuple[Message, bytes]] = {}

    def prepare(self, messages: Sequence[Message]) -> None:
        """Marshal ahead the frames of fires to be published at their instant.

        Their ``timestamp`` is then their publish instant; messages with a
        TTL are left to publish(), which counts it from the real moment.
        """
        prepared = self._prepared
        for message in messages:
            if message.expires_at is None:
                props = properties(message, message.publish_at, None)
                with contextlib.suppress(*ENCODE_ERRORS):  # publish() marshals and reports it
                    frames = marshal(PREPARED_CHANNEL, message, props, PREPARED_FRAME_MAX)
                    prepared[message.fire_id] = (message, frames)
        if len(prepared) > _PREPARED_MAX:
            for fire_id in list(prepared)[: _PREPARED_MAX // 2]:
                del prepared[fire_id]

    def publish(self, messages: Sequence[Message], now: datetime) -> list[Result]:
        """See Publisher.publish; raises BrokerError, never a pika exception."""
        batch = Batch(messages)
        for i, message in enumerate(messages):
            ttl = ttl_ms(message, now)
            if ttl is not None and ttl <= 0:
                batch.settle(i, Result(message.fire_id, Status.EXPIRED, expired_reason(message)))
            else:
                ahead = self._prepared.pop(message.fire_id, None)
                if ahead is not None and ahead[0] is message:
                    batch.frames[i] = ahead[1]
                else:
                    batch.properties[i] = properties(message, now, ttl)
        if batch.remaining == 0:
            return batch.final()
        with self._lock, self._mapped("publish"):
            try:
                return self._run(batch)
            except Unsent:
                # The connection went away while idle and nothing was written:
                # reconnecting now is safe and saves the relay a retry.
                return self._run(batch)

    def _run(self, batch: Batch) -> list[Result]:
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
        """Close the connection, if any; idempotent. A later publish reconnects.

        Does not wait for what holds the lock: a connection being opened (check() at a
        new term, or publish()) or a batch awaiting confirms is cut and fails with
        "closed". Waiting made a SIGTERM exit up to pika's 15 s connect timeout after
        the daemon had stopped, when the broker did not answer.
        """
        while not self._lock.acquire(timeout=0.05):  # (a publish may retry on a new link)
            for link in (self._opening, self._link):
                if link is not None:
                    link.close()
        try:
            self._drop()
        finally:
            self._lock.release()

    def _connected(self) -> Link:
        if self._link is not None and self._link.alive:
            return self._link
        self._drop()
        wait = self._backoff.remaining()
        if wait > 0:
            raise BrokerError(
                f"broker {self._safe_url} unreachable ({self._backoff.last_error}); "
                f"next attempt in {wait:.1f}s"
            )
        link = self._opening = Link(self._params, self._clean)
        try:
            link.start(self._connect_timeout)
        except BrokerError as exc:
            link.close()
            self._backoff.failed(str(exc))
            raise BrokerError(f"cannot connect to {self._safe_url}: {exc}") from None
        finally:
            self._opening = None
        self._backoff.succeeded()
        self._link = link
        return link

    def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def _clean(self, text: str) -> str:
        """One line, with no password in it."""
        return redact(" ".join(text.split()), self._url)

    @contextlib.contextmanager
    def _mapped(self, action: str) -> Iterator[None]:
        """The boundary: whatever pika (or the socket) raises leaves as BrokerError."""
        try:
            yield
        except BrokerError as exc:
            raise BrokerError(self._clean(str(exc))) from None
        except (pika.exceptions.AMQPError, OSError, RuntimeError) as exc:
            self._drop()
            raise BrokerError(self._clean(f"{action} failed: {describe(exc)}")) from None


def _kombu_vhost(url: str) -> str:
    """Read Celery's ``amqp://host//`` as the vhost "/", as kombu does (pika: "")."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/")) if parts.path == "//" else url
