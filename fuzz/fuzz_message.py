"""Fuzz the message path (not collected by CI): schedule options -> stored -> sent.

Random schedule options, hostile ones among them (long and multi-byte names,
header values of every JSON type and size, reserved header names, instants
at the ends of the calendar), go through `Beat.add` (the codec: the one
validation path). A refusal must be one ConfigError line per problem. What
is accepted must be storable: `trigger` records its fire in a real database
(PostgreSQL when reachable, else SQLite) and `claim` reads the message back;
and sendable: a real RabbitMQ takes it on the connection that sent it (as
addressed: confirmed, or returned when nothing routes it) and delivers it
byte for byte through a fanout exchange of the fuzzer's own. Anything else
(a failed or unencodable message, a closed connection or channel, a
traceback) is a find.

    .venv/bin/python -m pytest fuzz/fuzz_message.py          # a quick pass
    .venv/bin/python fuzz/fuzz_message.py --seconds 300      # a long run
"""

from __future__ import annotations

import atexit
import dataclasses
import socket
import tempfile
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pika
from fuzz_support import EXAMPLES, ZONES, run_for
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from beatd.api import Beat
from beatd.errors import ConfigError, Conflict
from beatd.model import Message
from beatd.publish.amqp import AmqpPublisher
from beatd.publish.base import Status
from beatd.publish.messages import BEATD_HEADERS
from beatd.store.sql import migrate

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _database() -> str:
    """A fresh PostgreSQL database (dropped at exit) when reachable, else SQLite."""
    if not _reachable(5432):
        return f"sqlite:///{tempfile.mkdtemp(prefix='beatd-fuzz-msg-')}/fuzz.db"
    import sqlalchemy as sa

    name = f"beatd_fuzz_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    atexit.register(drop)
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


class _Broker:
    """The fuzzer's fanout exchange and queue, a plain channel to read them, a publisher."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:12]
        self.exchange, self.queue = f"beatd-fuzz-{tag}", f"beatd-fuzz-{tag}"
        self.connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(self.exchange, "fanout", auto_delete=False)
        self.channel.queue_declare(self.queue)
        self.channel.queue_bind(self.queue, self.exchange)
        self.publisher = AmqpPublisher(AMQP_URL, name=f"beatd-fuzz-{tag}")
        atexit.register(self.close)

    def take(self) -> tuple[Any, bytes]:
        method, props, body = self.channel.basic_get(self.queue, auto_ack=True)
        assert method is not None, "the broker confirmed a message it did not deliver"
        return props, body

    def names_exist_or_not(self, message: Message) -> None:
        """Passive declares of its names: found or 404, never a protocol error."""
        for kind, name in (
            ("exchange", message.exchange),
            ("queue", message.queue or message.routing_key),
        ):
            if not name:
                continue
            try:
                getattr(self.channel, f"{kind}_declare")(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                assert exc.reply_code in (403, 404), (name, exc)
                self.channel = self.connection.channel()

    def close(self) -> None:
        self.publisher.close()
        if self.connection.is_open:
            channel = self.connection.channel()
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.exchange)
            self.connection.close()


_BEAT = Beat(database_url=_database())
migrate.upgrade(_BEAT.settings.database)
_LEASE = _BEAT.store.acquire("fuzz", timedelta(days=1), "fuzz")
_BROKER = _Broker()

# -- strategies ------------------------------------------------------------------

_WIDE = st.characters(codec="utf-8")  # 1- to 4-byte characters, no lone surrogates
_PRINTABLE = st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S"])
_NAMES = st.one_of(
    st.text(_WIDE, min_size=1, max_size=70),
    st.integers(180, 300).flatmap(lambda n: st.text(_WIDE, min_size=n, max_size=n)),
    st.integers(60, 300).map(lambda n: "q" * n),
    st.sampled_from(["celery", "amq.direct", "amq.x", "a b", "ü" * 128, "é" * 127]),
)
_HEADER_NAMES = st.one_of(
    st.text(_WIDE, max_size=20),
    st.sampled_from(sorted(BEATD_HEADERS[next(iter(BEATD_HEADERS))])),
    st.integers(250, 260).map(lambda n: "k" * n),
    st.sampled_from(["é" * 127, "é" * 128, "x-death", "\x00", ""]),
)
_INTS = st.one_of(
    st.integers(-(2**31), 2**31),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30]),
    st.integers(-(2**70), 2**70),
)
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    _INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(_WIDE, max_size=30),
    st.integers(0, 70_000).map(lambda n: "v" * n),  # near and over frame_max
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(_HEADER_NAMES, inner, max_size=4),
        st.integers(0, 40_000).map(lambda n: [1] * n),  # 2 bytes of JSON, 9 of AMQP each
    ),
    max_leaves=10,
)
# Only many small values outgrow a frame within 64 KiB of JSON: 14,450 ints fill 131072 bytes.
_NEAR_FRAME_MAX = st.builds(
    lambda n, item, pad: {"many": [item] * n, "pad": "v" * pad},
    st.integers(13_800, 14_600),
    st.sampled_from([1, 2**40, "", [], {}]),
    st.integers(0, 3000),
)
_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_INSTANTS = st.one_of(
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=_OFFSETS
    ),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_OFFSETS),
    st.sampled_from(
        ["9999-12-31T23:00:00-14:00", "0001-01-01T00:00:00+14:00", "9997-12-31T23:59:59Z"]
    ),
).map(lambda d: d if isinstance(d, str) else d.isoformat())
_DURATIONS = st.one_of(
    st.sampled_from(["1s", "1m", "1h30m", "2d", "36500d"]), st.integers(1, 100 * 365 * 86400)
)


@st.composite
def options(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["every", "cron", "at"]))
    table: dict[str, Any] = {
        "every": {"every": draw(_DURATIONS)},
        "cron": {"cron": "* * * * *"},
        "at": {"at": draw(_INSTANTS)},
    }[kind]
    table["task"] = draw(_NAMES)
    optional = {
        "queue": _NAMES,
        "exchange": st.just("") | _NAMES,
        "routing_key": st.just("") | _NAMES,
        "headers": st.dictionaries(_HEADER_NAMES, _VALUES, max_size=5) | _NEAR_FRAME_MAX,
        "args": st.lists(_VALUES, max_size=3),
        "kwargs": st.dictionaries(st.text(_WIDE, max_size=10), _VALUES, max_size=3),
        "format": st.sampled_from(["celery", "json"]),
        "timezone": st.sampled_from(ZONES),
        "start": _INSTANTS,
        "end": _INSTANTS,
        "anchor": _INSTANTS,
        "expires": _DURATIONS,
        "jitter": _DURATIONS,
        "priority": st.integers(0, 255),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=6)):
        table[key] = draw(optional[key])
    return table


# -- the property ----------------------------------------------------------------


def _added(name: str, table: dict[str, Any]) -> bool:
    """Add the schedule; False when the codec refused it (one line per problem)."""
    try:
        _BEAT.add(name, **table)
    except Conflict:
        _BEAT.remove(name)
        return _added(name, table)
    except ConfigError as exc:
        assert exc.problems, table
        for line in exc.problems:
            assert line and "\n" not in line and len(line) < 1000, line
        event(f"refused: {exc.problems[0].split(': ')[1][:12]}")
        return False
    event("accepted")
    return True


@settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
@given(name=st.text(_PRINTABLE, min_size=1, max_size=40), table=options())
def test_an_accepted_schedule_is_stored_and_sent_or_refused_in_one_line(
    name: str, table: dict[str, Any]
) -> None:
    name = name.strip() or "x"
    if not name.isprintable() or not _added(name, table):
        return
    assert _LEASE is not None
    fid = _BEAT.trigger(name)
    claimed = _BEAT.store.claim(_LEASE, datetime.now(UTC) + timedelta(seconds=1), 50)
    [message] = [m for m in claimed if m.fire_id == fid]
    now = datetime.now(UTC)
    expired = message.expires_at is not None and message.expires_at <= now
    _BROKER.names_exist_or_not(message)

    as_addressed = dataclasses.replace(message, queue=None)  # no declare on the shared broker
    fanned = dataclasses.replace(message, exchange=_BROKER.exchange, queue=None)
    results = _BROKER.publisher.publish([as_addressed, fanned], now)

    event(f"headers of {len(str(message.headers)) // 20_000 * 20}+ kB as text")
    sent = Status.EXPIRED if expired else Status.CONFIRMED
    assert results[0].status in (sent, Status.RETURNED), (results[0], table)
    assert results[1].status is sent, (results[1], table)
    _BEAT.store.mark_sent([fid], now)
    if sent is Status.CONFIRMED:
        props, body = _BROKER.take()
        assert (props.message_id, body) == (fid, message.body)
        assert props.headers == dict(message.headers)
    _BEAT.remove(name)


if __name__ == "__main__":
    run_for([test_an_accepted_schedule_is_stored_and_sent_or_refused_in_one_line])
