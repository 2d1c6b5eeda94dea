"""The values everything else passes around: frozen, typed, already parsed.

Strings such as "1h30m", zone names and ISO times are parsed at the edges
(config.py, the CLI, the API); the core sees aware UTC datetimes, timedeltas
and ZoneInfo. A naive datetime below the edges is a bug.
"""

from __future__ import annotations

import enum
import itertools
import secrets
import string
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Cron:
    """5 fields, or 6 with seconds first; macros already expanded."""

    expr: str


@dataclass(frozen=True, slots=True)
class Every:
    """Fires at anchor + k·period for every integer k; never drifts."""

    period: timedelta
    anchor: datetime = EPOCH


@dataclass(frozen=True, slots=True)
class RRule:
    """An RFC 5545 RRULE body (no DTSTART line): the schedule's start is DTSTART."""

    rule: str


@dataclass(frozen=True, slots=True)
class Once:
    at: datetime


Spec = Cron | Every | RRule | Once


class Misfire(enum.StrEnum):
    SKIP = "skip"
    COALESCE = "coalesce"
    ALL = "all"


class Format(enum.StrEnum):
    CELERY = "celery"
    JSON = "json"


class Source(enum.StrEnum):
    FILE = "file"
    API = "api"


def kind_of(spec: Spec) -> str:
    """The TOML key that declares this kind: cron, every, rrule or at."""
    return {Cron: "cron", Every: "every", RRule: "rrule", Once: "at"}[type(spec)]


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule, as declared; no run state (that lives in the store)."""

    name: str
    spec: Spec
    task: str
    timezone: ZoneInfo = UTC_ZONE
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "celery"
    exchange: str = ""
    routing_key: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    format: Format = Format.CELERY
    start: datetime | None = None
    end: datetime | None = None
    jitter: timedelta = timedelta(0)
    expires: timedelta | None = None
    misfire: Misfire = Misfire.COALESCE
    grace: timedelta | None = None
    max_fires: int | None = None
    history_limit: int | None = None  # keep at most this many history rows (newest)
    enabled: bool = True
    priority: int | None = None
    source: Source = Source.API

    @property
    def kind(self) -> str:
        return kind_of(self.spec)

    @property
    def timing(self) -> tuple[object, ...]:
        """The fields that decide its instants: when they change, the next instant is recomputed."""
        return (self.spec, self.timezone, self.start, self.end, self.enabled)

    @property
    def route(self) -> str:
        """The routing key messages go out with: routing_key, else the queue."""
        return self.routing_key if self.routing_key is not None else self.queue


@dataclass(frozen=True, slots=True)
class Fire:
    """One upcoming or past instant of a schedule."""

    schedule: str
    at: datetime  # aware, UTC
    local: datetime  # the same instant in the schedule's zone

    @classmethod
    def of(cls, schedule: Schedule, at: datetime) -> Fire:
        return cls(schedule.name, at, at.astimezone(schedule.timezone))


class Outcome(enum.StrEnum):
    PENDING = "pending"  # recorded, in the outbox, not yet confirmed
    SENT = "sent"  # the broker confirmed it
    FAILED = "failed"  # the broker returned or refused it; reason says why
    DROPPED = "dropped"  # decided not to send (misfire policy, grace, cap)


@dataclass(frozen=True, slots=True)
class FireRecord:
    """A row of the run history."""

    fire_id: str
    schedule: str
    scheduled_for: datetime
    outcome: Outcome
    decided_at: datetime
    reason: str | None = None
    sent_at: datetime | None = None
    manual: bool = False
    epoch: int | None = None


BUCKETS = 4096
"""Buckets a schedule's name hashes into; a partition is the buckets b with b % P == index.

Stored with each schedule and outbox row, so P can change by a restart
without rewriting a row, and the SQL filter stays portable (`bucket % P`).
"""

LEADER_LEASE = "leader"
"""The lease row of P = 1: today's one leader, so an upgrade changes nothing."""


def bucket(name: str) -> int:
    """A schedule's bucket: stable across processes and versions (never Python's hash)."""
    return zlib.crc32(name.encode()) % BUCKETS


@dataclass(frozen=True, slots=True)
class Partition:
    """Partition `index` of `count`: the schedules whose bucket % count == index."""

    index: int = 0
    count: int = 1

    @property
    def whole(self) -> bool:
        """P = 1: everything, with no filter at all (today's queries)."""
        return self.count == 1

    @property
    def lease_name(self) -> str:
        return LEADER_LEASE if self.whole else f"partition {self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        return self.whole or bucket(name) % self.count == self.index

    @staticmethod
    def all(count: int) -> tuple[Partition, ...]:
        return tuple(Partition(i, count) for i in range(count))

    @staticmethod
    def named(name: str) -> Partition | None:
        """The partition a lease row's name stands for; None for a name beatd does not use."""
        if name == LEADER_LEASE:
            return WHOLE
        head, _, tail = name.partition(" ")
        index, _, count = tail.partition("/")
        if head != "partition" or not index.isdigit() or not count.isdigit():
            return None
        found = Partition(int(index), int(count))
        return found if found.index < found.count else None

    def __str__(self) -> str:
        return "all" if self.whole else f"{self.index}/{self.count}"


WHOLE = Partition()
"""Every schedule: P = 1, and what the commands that hold no lease read."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Who leads, under which fencing epoch, until when (database clock).

    `holder` is the configured instance id (shown in logs and status; several
    processes may share it); `token` is the process's own nonce. Renew,
    release and every fenced write compare (token, epoch), so two processes
    with one `instance_id` never pass fencing at one epoch. `partition` is
    whose schedules it fences: each partition has its own lease row, and a
    write under it touches only that partition's schedules and outbox rows.
    """

    holder: str
    epoch: int
    expires_at: datetime
    token: str = ""
    partition: Partition = WHOLE


@dataclass(frozen=True, slots=True)
class Instance:
    """A running beatd process as the cluster sees it (leader or standby)."""

    holder: str
    token: str
    started_at: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class Message:
    """One fire's message, as built when it is recorded and as the outbox holds it."""

    fire_id: str  # AMQP message_id (and Celery task id)
    schedule: str
    scheduled_for: datetime  # nominal instant, aware UTC
    publish_at: datetime  # scheduled_for + jitter
    exchange: str
    routing_key: str
    body: bytes
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    headers: Mapping[str, Any] = field(default_factory=dict)
    priority: int | None = None
    expires_at: datetime | None = None  # TTL is computed from this at publish time
    queue: str | None = None  # declare this durable queue if it does not exist
    # This object's own number, unique with overwhelming odds (a random start, counted
    # up). Stored beside the outbox row and returned by a claim, it lets the relay use
    # the message it already holds (and its prepared frames) only when the row was
    # written from this very object; any other row, a redefined fire's, is read back.
    stamp: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stamp", next(_stamps))


_stamps = itertools.count(secrets.randbits(62))  # below 2**63 for as long as it counts


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A schedule with the run state the store keeps for it."""

    schedule: Schedule
    next_at: datetime | None  # the next instant not yet decided; None = finished
    last_at: datetime | None  # the latest instant decided (sent or dropped)
    fires: int  # instants recorded as fires so far (for max_fires)
    paused: bool
    note: str | None
    version: int  # bumped on every change of definition or pause
    created_at: datetime

    @property
    def state(self) -> str:
        return schedule_state(self.schedule, self.next_at, self.paused)


STATES = ("active", "paused", "disabled", "finished")


def schedule_state(schedule: Schedule, next_at: datetime | None, paused: bool) -> str:
    """One of STATES: paused, else disabled, else finished (no next instant), else active."""
    if paused:
        return "paused"
    if not schedule.enabled:
        return "disabled"
    return "active" if next_at is not None else "finished"


@dataclass(frozen=True, slots=True)
class ScheduleFilter:
    """Which schedules a page lists; each field that is set narrows it."""

    text: str = ""  # a part of the name; ASCII letters match in either case
    state: str | None = None  # one of STATES
    source: str | None = None  # "file" or "api"

    def matches(self, name: str, state: str, source: str) -> bool:
        return (
            ascii_lower(self.text) in ascii_lower(name)
            and self.state in (None, state)
            and self.source in (None, source)
        )


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def ascii_lower(text: str) -> str:
    """`text` with ASCII letters in lower case and every other character as it is."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True, slots=True)
class SchedulePage:
    """One page of schedules by name, how many match in all, and their newest history rows."""

    schedules: tuple[StoredSchedule, ...]
    total: int
    last: Mapping[str, FireRecord]  # name -> newest row, for those with any history


@dataclass(frozen=True, slots=True)
class Decision:
    """What the planner decided for one instant of one schedule."""

    schedule: str
    scheduled_for: datetime
    fire_id: str
    outcome: Outcome  # PENDING (to send; `message` is set) or DROPPED
    reason: str | None = None
    message: Message | None = None
    manual: bool = False


@dataclass(frozen=True, slots=True)
class Advance:
    """Move a schedule's run state forward, if its version is still `version`."""

    name: str
    version: int
    next_at: datetime | None
    last_at: datetime | None
    fires_added: int
