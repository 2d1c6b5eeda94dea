"""The leader lease as a state machine: acquire, renew, self-fence, release.

The database judges expiry (its clock is the time authority, SPEC §7); this
side only decides when to ask, and when to stop trusting what it holds:

    follower --acquire ok--> leader --renew ok--> leader
       ^                        |  renew refused / Fenced: step down at once
       |                        |  no renew for ttl - margin (local monotonic
       +------------------------+  clock): self-fenced, stops deciding

A leader that cannot reach the database stops deciding before its lease can
expire, measured from the *start* of the last successful renew on the
monotonic clock, so neither a wall-clock jump nor a slow reply can extend it.

DatabaseTime is the clock the daemon decides with: the database's time,
read every RESYNC seconds and carried forward on the monotonic clock, so a
leader whose wall clock is stepped fires neither early nor late. It warns
when this host's wall clock is more than SKEW_WARN off the database's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from beatd.clock import Clock
from beatd.errors import StoreError
from beatd.model import WHOLE, Lease, Partition
from beatd.store.base import LeaseStore

log = logging.getLogger("beatd.leader")

SKEW_WARN = 1.0  # seconds between this host's clock and the database's
RESYNC = 2.0  # seconds between readings of the database clock
STANDBY_POLL = 0.5  # a standby asks at least this often, so takeover is quick


class Leadership(Protocol):
    """What the tick and the relay need of the leader: the lease, and giving it up."""

    @property
    def lease(self) -> Lease | None:
        """The lease while leading (and not self-fenced), else None."""
        ...

    def step_down(self) -> None:
        """A fenced write showed the lease is gone: stop deciding at once."""
        ...


def default_holder() -> str:
    """`<hostname>:<pid>`, the id `status` shows for this instance."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Leader:
    """Holds (or not) one partition's lease; thread-safe reads for the tick and relay loops.

    `sharing.Crew` holds a process's Leaders (one with P = 1), writes its
    roll call once for all of them, and hands a partition over by setting
    `handing_over`: the tick stops deciding for it (`Deciding`), the relay
    drains it, then it is released.
    """

    def __init__(
        self,
        store: LeaseStore,
        clock: Clock,
        ttl: timedelta,
        holder: str | None = None,
        *,
        margin: float | None = None,
        on_failure: Callable[[StoreError], None] = lambda exc: None,
        partition: Partition = WHOLE,
        token: str | None = None,
    ) -> None:
        self.store, self.clock, self.partition = store, clock, partition
        self.holder = holder or default_holder()
        # This process's own identity: instance ids may be shared (one config file on
        # every host), tokens never are, so no two processes lead at one epoch.
        self.token = token or uuid.uuid4().hex
        self.handing_over = False  # set by the Crew: stop deciding, drain, release
        self.ttl = ttl
        seconds = ttl.total_seconds()
        self.margin = margin if margin is not None else seconds / 4
        self.renew_every = seconds / 3
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._valid_until = 0.0  # monotonic: stop deciding at this moment
        self.renew_failures = 0  # in a row; reset by a success
        self._on_failure = on_failure

    @property
    def lease(self) -> Lease | None:
        """The lease while leading, else None."""
        with self._lock:
            return self._lease if self._leading(self.clock.monotonic()) else None

    def is_leading(self, mono_now: float | None = None) -> bool:
        with self._lock:
            return self._leading(self.clock.monotonic() if mono_now is None else mono_now)

    def _leading(self, mono: float) -> bool:
        return self._lease is not None and mono < self._valid_until

    def step(self, *, acquire: bool = True) -> float:
        """Renew, or acquire when `acquire`; returns seconds until the next step.

        Raises nothing: a StoreError counts as a failed renew (logged once
        per outage while leading) and leaves the self-fence to run out.
        """
        started = self.clock.monotonic()
        with self._lock:
            held = self._lease if self._leading(started) else None
        try:
            lease = self.store.renew(held, self.ttl) if held else None
            if lease is None and acquire:
                lease = self.store.acquire(self.holder, self.ttl, self.token, self.partition)
        except StoreError as exc:
            self._failed(held, exc)
            return self.renew_every / 4 if held else self._standby_wait()
        if held is not None and (lease is None or lease.epoch != held.epoch):
            log.warning("lost the lease", extra=self._extra(held))
        with self._lock:
            self.renew_failures = 0
            self._lease = lease
            if lease is not None:
                self._valid_until = started + self.ttl.total_seconds() - self.margin
        if lease is not None and (held is None or lease.epoch != held.epoch):
            log.info("leading", extra=dict(self._extra(lease), holder=self.holder))
        if lease is not None:
            return self.renew_every
        return self._standby_wait()

    def _extra(self, lease: Lease) -> dict[str, object]:
        """Log fields: the epoch, and the partition when there are several."""
        if self.partition.whole:
            return {"epoch": lease.epoch}
        return {"epoch": lease.epoch, "partition": str(self.partition)}

    def _standby_wait(self) -> float:
        return min(self.renew_every, STANDBY_POLL)

    def _failed(self, held: Lease | None, exc: StoreError) -> None:
        with self._lock:
            self.renew_failures += 1
            first = self.renew_failures == 1
            left = self._valid_until - self.clock.monotonic()
        self._on_failure(exc)
        if first and held is not None:
            log.error(
                f"cannot renew the lease (epoch {held.epoch}): {exc}; "
                f"deciding stops in {max(left, 0.0):.1f}s unless a renew succeeds"
            )

    def step_down(self) -> None:
        """Forget the lease at once (a write was Fenced, or we lost it)."""
        with self._lock:
            if self._lease is not None:
                log.warning("fenced: stepping down", extra=self._extra(self._lease))
            self._lease = None

    def release(self) -> None:
        """Give the lease up so a standby takes over at once.

        Never raises.
        """
        with self._lock:
            lease, self._lease = self._lease, None
            self.handing_over = False
        try:
            if lease is not None:
                self.store.release(lease)
                log.info("released the lease", extra=self._extra(lease))
        except StoreError as exc:
            log.error(f"cannot release the lease: {exc}")


class Deciding:
    """The tick's view of a Leader: no lease while its partition is handed over.

    The relay keeps the Leader's own view, so it goes on publishing (and
    claiming) what was recorded until the partition is drained.
    """

    def __init__(self, leader: Leader) -> None:
        self.leader = leader

    @property
    def lease(self) -> Lease | None:
        return None if self.leader.handing_over else self.leader.lease

    def step_down(self) -> None:
        self.leader.step_down()


class DatabaseTime:
    """A Clock reading the database's time: last reading + monotonic time since.

    `sync()` does the I/O (the lease loop calls it); `now()` never does, and
    falls back to the local clock until the first successful reading.
    Thread-safe.
    """

    def __init__(self, store: LeaseStore, local: Clock, *, resync: float = RESYNC) -> None:
        self.store, self.local, self.resync = store, local, resync
        self._lock = threading.Lock()
        self._anchor: tuple[datetime, float] | None = None  # (database time, monotonic)
        self._tried = float("-inf")
        self._warned: float | None = None  # the skew last warned about

    def now(self) -> datetime:
        with self._lock:
            anchor = self._anchor
        if anchor is None:
            return self.local.now()
        return anchor[0] + timedelta(seconds=self.local.monotonic() - anchor[1])

    def monotonic(self) -> float:
        return self.local.monotonic()

    def sync(self, *, force: bool = False) -> None:
        """Read the database clock if RESYNC has passed; StoreError is left to the lease loop."""
        mono = self.local.monotonic()
        with self._lock:
            if not force and mono - self._tried < self.resync:
                return
            self._tried = mono
        wall_before = self.local.now()
        try:
            db = self.store.db_now()
        except StoreError:
            return
        after = self.local.monotonic()
        wall = wall_before + timedelta(seconds=(after - mono) / 2)
        with self._lock:
            # Anchored at the end of the round trip, so now() is never ahead of the
            # database: a fire recorded ahead is never published before its instant.
            self._anchor = (db, after)
        self._check_skew((wall - db).total_seconds())

    def _check_skew(self, skew: float) -> None:
        if abs(skew) > SKEW_WARN:
            if self._warned is None or abs(skew - self._warned) > SKEW_WARN:
                self._warned = skew
                log.warning(
                    f"this host's clock is {skew:+.3f}s off the database's; "
                    "scheduling follows the database clock",
                    extra={"skew_seconds": round(skew, 3)},
                )
        elif self._warned is not None:
            self._warned = None
            log.info("this host's clock agrees with the database's again")
