"""Partitions shared among the running instances: how many to hold, which to take or hand over.

Every instance writes its roll call (the `instances` table) once a second.
With P partitions and n instances seen within one lease, each aims to hold

    share = ceil(P / n)

Instances are ranked by when they started (the roll call's order); the
partitions p with p % n == rank are an instance's *preferred* ones. It takes
free or expired partitions, preferred first and then the lowest, up to its
share, so instances starting together mostly ask for different ones. When
it holds more than its share (an instance joined) for HANDOVER_AFTER, it
hands the least preferred excess over: the tick stops deciding them, the
relay publishes what is recorded (as SIGTERM does), and the lease is released,
so another instance takes each at its next poll. A dead instance's leases
expire and it drops out of the roll call within one lease; the others' share
grows and they take its partitions: all within two leases.

With P = 1 none of this runs but the roll call: the one Leader steps as before.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from beatd.clock import Clock
from beatd.errors import StoreError
from beatd.leader import STANDBY_POLL, Leader, default_holder
from beatd.model import Partition
from beatd.store.base import LeaseStore

log = logging.getLogger("beatd.sharing")

HEARTBEAT = 1.0  # seconds between roll-call writes (status lists every instance)
HANDOVER_AFTER = 3.0  # seconds over the share before handing partitions over (no thrash)
HANDOVER_POLL = 0.25  # seconds between steps while a handover drains


def share(count: int, live: int) -> int:
    """Partitions each of `live` instances aims to hold: ceil(count / live)."""
    return -(-count // max(live, 1))


def preference(count: int, rank: int, live: int) -> list[int]:
    """Partition indexes in the order an instance of `rank` among `live` wants them."""
    return sorted(range(count), key=lambda p: (p % max(live, 1) != rank, p))


class Crew:
    """This process's Leaders, one per partition, and the share it takes of them."""

    def __init__(
        self,
        store: LeaseStore,
        clock: Clock,
        ttl: timedelta,
        count: int,
        holder: str | None = None,
        *,
        now: Callable[[], datetime] | None = None,
        on_failure: Callable[[StoreError], None] = lambda exc: None,
    ) -> None:
        self.store, self.clock, self.ttl = store, clock, ttl
        self.holder = holder or default_holder()
        self.token = uuid.uuid4().hex
        self._now = now or clock.now
        self._on_failure = on_failure
        self.leaders = [
            Leader(
                store,
                clock,
                ttl,
                self.holder,
                on_failure=on_failure,
                partition=p,
                token=self.token,
            )
            for p in Partition.all(count)
        ]
        self.share = count
        self._lock = threading.Lock()
        self._drained: set[int] = set()  # handed-over partitions the relay has drained
        self._seen = float("-inf")  # monotonic time of the last heartbeat
        self._over_since: float | None = None  # monotonic: since when it holds too many
        self._foreign: int | None = None  # another partitioning still holding leases

    @property
    def count(self) -> int:
        return len(self.leaders)

    def held(self) -> list[Leader]:
        """The leaders holding their partition's lease now (handing over or not)."""
        return [leader for leader in self.leaders if leader.is_leading()]

    def drained(self, leader: Leader) -> None:
        """The relay published what `leader`'s partition had recorded: release it next step."""
        with self._lock:
            self._drained.add(leader.partition.index)

    def step(self, *, acquire: bool = True) -> float:
        """Renew what is held, take up to the share, hand over the excess; seconds to the next.

        Raises nothing: a StoreError counts as a failed step, and each held
        lease's self-fence runs out as it would for one leader.
        """
        if self.count == 1:  # P = 1: exactly one leader, as before
            try:
                self._heartbeat()
            except StoreError as exc:
                self._on_failure(exc)
            return self.leaders[0].step(acquire=acquire)
        waits = [self._release_drained()]
        held = self.held()
        waits += [leader.step(acquire=acquire and not leader.handing_over) for leader in held]
        try:
            rank, live = self._roll_call()
            free = self._free() if acquire else []
        except StoreError as exc:
            self._on_failure(exc)
            return min([*waits, STANDBY_POLL])
        self.share = share(self.count, live)
        held = self.held()
        order = preference(self.count, rank, live)
        wanted = [i for i in order if i in free][: max(self.share - len(held), 0)]
        for index in wanted:
            self.leaders[index].step(acquire=True)
        if acquire and len(self.held()) < self.share and free:
            waits.append(STANDBY_POLL)
        waits.append(self._hand_over(order))
        return max(min(waits), 0.01)

    def _heartbeat(self) -> None:
        """This process's roll call (the `instances` table), at most every HEARTBEAT."""
        started = self.clock.monotonic()
        if started - self._seen >= HEARTBEAT:
            self.store.heartbeat(self.holder, self.token)
            self._seen = started

    def _roll_call(self) -> tuple[int, int]:
        """(this process's rank, live instances), writing its own roll call first."""
        self._heartbeat()
        live = self.store.instances(self._now() - self.ttl)
        tokens = [i.token for i in live]
        if self.token not in tokens:
            return len(tokens), len(tokens) + 1
        return tokens.index(self.token), len(tokens)

    def _free(self) -> set[int]:
        """Partitions this process may take: nobody holds them, or the row is still its own.

        Its own row while not leading there: it self-fenced (no renew in time),
        and takes it back at once at a new epoch, as a single Leader does.
        """
        leases = self.store.leases()
        mine = {x.partition.index for x in self.held()}
        taken = {
            x.partition.index
            for x in leases
            if x.partition.count == self.count
            and (x.token != self.token or x.partition.index in mine)
        }
        foreign = sorted({x.partition.count for x in leases if x.partition.count != self.count})
        if foreign and self._foreign is None:
            log.warning(
                f"instances with partitions = {', '.join(map(str, foreign))} still hold leases; "
                f"this one (partitions = {self.count}) waits for them to stop: "
                "restart every instance to change partitions"
            )
        self._foreign = foreign[0] if foreign else None
        return set(range(self.count)) - taken

    def _hand_over(self, order: Sequence[int]) -> float:
        """Mark the least preferred excess as handing over, once over the share long enough."""
        keeping = [x for x in self.held() if not x.handing_over]
        if len(keeping) <= self.share:
            self._over_since = None
            return self.ttl.total_seconds() / 3
        mono = self.clock.monotonic()
        if self._over_since is None:
            self._over_since = mono
        if mono - self._over_since < HANDOVER_AFTER:
            return HANDOVER_AFTER - (mono - self._over_since)
        rank = {index: n for n, index in enumerate(order)}
        keeping.sort(key=lambda x: rank[x.partition.index], reverse=True)
        for leader in keeping[: len(keeping) - self.share]:
            leader.handing_over = True
            log.info(
                "handing a partition over",
                extra={"partition": str(leader.partition), "share": self.share},
            )
        self._over_since = None
        return HANDOVER_POLL

    def _release_drained(self) -> float:
        with self._lock:
            drained, self._drained = self._drained, set()
        for index in sorted(drained):
            self.leaders[index].release()
        if any(x.handing_over for x in self.leaders):
            return HANDOVER_POLL
        return self.ttl.total_seconds() / 3

    def release(self) -> None:
        """SIGTERM: give every lease up at once and leave the roll call. Never raises."""
        for leader in self.leaders:
            leader.release()
        try:
            self.store.heartbeat(self.holder, self.token, leaving=True)
        except StoreError as exc:
            log.error(f"cannot leave the roll call: {exc}")
