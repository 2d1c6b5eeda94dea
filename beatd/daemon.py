"""Wiring: the lease, tick, relay and change-watcher threads, signals, shutdown order.

Four small loops, each waiting on its own Event with a timeout equal to the
time to its next piece of work, so none ever sleeps blindly:

    lease    renews every lease/3 (a standby asks every 0.5 s); kept apart so
             a long catch-up transaction or a slow broker never delays a renew
    tick     leader only: due schedules -> record; pings the systemd watchdog
    relay    leader only: outbox -> broker; a slow or absent broker never
             holds up deciding
    watcher  store.wait_for_change (PostgreSQL LISTEN) or change_count() every
             0.5 s: wakes tick and relay, so API changes apply within a second; a
             counter that went back means the database lost beatd's rows
             (recreated, restored): it reloads the file, as SIGHUP does
    pruner   leader only: deletes history older than keep_history (and beyond
             each schedule's history_limit), PRUNE_BATCH rows per transaction
             with a pause between, every PRUNE_EVERY: off the tick's path

The main thread handles signals: SIGHUP reloads the TOML file (a broken file
logs one line and keeps the last good schedules); SIGTERM/SIGINT stop
deciding, drain what is due in the outbox (bounded), release the lease so a
standby takes over at once, and return 0.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from beatd import planner, timing
from beatd.clock import Clock, SystemClock
from beatd.config import Settings, load_settings
from beatd.errors import BeatdError, ConfigError, SchemaError, StoreError
from beatd.leader import DatabaseTime, Deciding
from beatd.metrics import Metrics
from beatd.model import Message, Once, Schedule
from beatd.publish.base import Publisher
from beatd.publish.messages import build_message
from beatd.publish.retry import RetryPolicy
from beatd.relay import Relay
from beatd.sharing import Crew
from beatd.store.base import ReconcileResult, Store
from beatd.systemd import Notifier
from beatd.tick import LOOKAHEAD, Ticker

log = logging.getLogger("beatd.daemon")

MAX_IDLE = 5.0  # seconds a loop waits at most, even with nothing to do
CHANGE_POLL = 0.5  # seconds between change_count() polls
DRAIN_TIMEOUT = 10.0  # seconds SIGTERM may spend publishing what is due
DRAIN_MARGIN = timedelta(milliseconds=50)  # ...which is what is due within the lookahead
OUTAGE_REPEAT = 30.0  # seconds between "still unavailable" lines
BACKLOG_EVERY = 1.0  # seconds between outbox counts (metric and status)
HEALTH_WINDOW = 3 * MAX_IDLE  # /healthz fails when the tick loop is silent this long
HEALTH_GRACE = 10.0  # ...or when a loop has been failing this long (a blip is not unhealthy)
PRUNE_EVERY = 60.0  # seconds between history pruning rounds
PRUNE_BATCH = 1000  # history rows deleted per transaction
PRUNE_PAUSE = 0.2  # seconds between two batches of one round: other writes go between
STORE_RETRY = RetryPolicy(initial=0.5, max=5.0)


def _seconds_until(instant: datetime | None, now: datetime, cap: float) -> float:
    if instant is None:
        return cap
    return min(max((instant - now).total_seconds(), 0.0), cap)


def _first_after(now: datetime) -> Callable[[Schedule], datetime | None]:
    return lambda schedule: timing.next_after(schedule, now)


@dataclass(slots=True)
class _Failing:
    count: int  # failures in a row
    since: float  # monotonic: the first of them
    why: str  # the last of them
    database: bool  # a database failure (the outage log lines are about those)


_CANNOT = {
    "tick": "cannot record fires",
    "relay": "cannot read or settle the outbox",
    "broker": "cannot publish",
    "lease": "cannot renew or take the lease",
    "watcher": "cannot watch for changes",
    "pruner": "cannot prune the history",
    "load": "cannot load the schedules",
}


class _Failures:
    """What each loop is failing at, since when and why: the outage log lines and /healthz.

    A database failure logs a line when the database goes away, one every
    OUTAGE_REPEAT while it stays away, and one when it is back, whichever
    loop notices. Any failure that lasts HEALTH_GRACE makes the daemon
    unhealthy, with its reason.
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._failing: dict[str, _Failing] = {}
        self._since = self._said = 0.0

    def _note(self, loop: str, why: str, database: bool, now: float) -> int:
        known = self._failing.get(loop)
        if known is None:
            known = self._failing[loop] = _Failing(0, now, why, database)
        known.count += 1
        known.why, known.database = why, database
        return known.count

    def _database_down(self) -> bool:
        return any(f.database for f in self._failing.values())

    def failed(self, loop: str, exc: BaseException) -> int:
        """Count a database failure of `loop`; returns its failures in a row."""
        now = self._monotonic()
        with self._lock:
            first = not self._database_down()
            count = self._note(loop, str(exc), True, now)
            if first:
                self._since = self._said = now
            again = not first and now - self._said >= OUTAGE_REPEAT
            if again:
                self._said = now
        if first:
            log.error(f"database unavailable, retrying with backoff: {exc}")
        elif again:
            log.error(f"database still unavailable after {now - self._since:.0f}s: {exc}")
        return count

    def failing(self, loop: str, why: str) -> None:
        """Note a failure that is not the database's (the broker, a bug)."""
        now = self._monotonic()
        with self._lock:
            self._note(loop, why, False, now)

    def recovered(self, loop: str) -> None:
        with self._lock:
            gone = self._failing.pop(loop, None)
            back = gone is not None and gone.database and not self._database_down()
        if back:
            log.info("database available again")

    def problems(self, grace: float) -> list[str]:
        """One line per loop failing for `grace` seconds or more."""
        now = self._monotonic()
        with self._lock:
            failing = sorted(self._failing.items())
        return [
            f"{loop}: {_CANNOT.get(loop, 'failing')} for {now - f.since:.0f} s: {f.why}"
            for loop, f in failing
            if now - f.since >= grace
        ]


class Daemon:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        publisher: Publisher,
        clock: Clock | None = None,
        *,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        reload: Callable[[Path | None], Settings] = load_settings,
    ) -> None:
        self.settings, self.store, self.publisher = settings, store, publisher
        self.clock = clock or SystemClock()  # pacing (monotonic), and the skew check
        self.time = DatabaseTime(store, self.clock)  # what fires are decided by
        self.notifier = notifier or Notifier()
        self.metrics = metrics or Metrics()
        self._reload_settings = reload
        self.crew = Crew(
            store,
            self.clock,
            settings.lease,
            settings.partitions,
            settings.instance_id,
            now=self.time.now,
            on_failure=self._lease_failed,
        )
        # One relay and one ticker per partition, each fenced by its partition's lease,
        # each counting under its partition's label.
        self.relays = [
            Relay(
                store,
                publisher,
                self.time,
                self.metrics.of(x.partition.index),
                leader=x,
                partition=x.partition,
            )
            for x in self.crew.leaders
        ]
        self.tickers = [
            Ticker(
                store,
                Deciding(leader),
                build_message,
                relay.metrics,
                on_recorded=self._offer_to(relay),
                partition=leader.partition,
            )
            for leader, relay in zip(self.crew.leaders, self.relays, strict=True)
        ]
        # P = 1: the one leader, ticker and relay. The first partition's holder prunes.
        self.leader, self.ticker, self.relay = self.crew.leaders[0], self.tickers[0], self.relays[0]
        self._handovers: dict[int, float] = {}  # partition -> monotonic drain deadline
        self._stop = threading.Event()  # stop deciding
        self._decided = threading.Event()  # the tick loop has stopped: nothing more to record
        self._release = threading.Event()  # relay drained: give the lease up
        self._control = threading.Event()  # main thread: a signal arrived
        self._tick_wake, self._relay_wake, self._lease_wake = (threading.Event() for _ in "abc")
        self._reload_pending = False
        self._heartbeat = self._pinged = self.clock.monotonic()
        self._broken = False
        self._failures = _Failures(self.clock.monotonic)
        self._threads: list[threading.Thread] = []
        self._status = ""
        self._backlog = 0

    # -- control (signal-safe: only set flags and events) ----------------------

    def request_stop(self) -> None:
        self._stop.set()
        self._control.set()

    def request_reload(self) -> None:
        self._reload_pending = True
        self._control.set()

    def healthy(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """Why this instance is unhealthy, one line each (/healthz); empty when it is not."""
        found = self._failures.problems(HEALTH_GRACE)
        silent = self.clock.monotonic() - self._heartbeat
        if silent >= HEALTH_WINDOW:
            found.append(f"tick: the loop has been silent for {silent:.0f} s")
        if self._release.is_set():
            found.append("stopping: the lease is released or being released")
        return found

    def _lease_failed(self, exc: StoreError) -> None:
        self.metrics.renew_failures.inc()
        self._failures.failed("lease", exc)

    def _offer_to(self, relay: Relay) -> Callable[[list[Message]], None]:
        def recorded(messages: list[Message]) -> None:
            relay.offer(messages)
            self._relay_wake.set()

        return recorded

    def _wake_all(self) -> None:
        for event in (self._tick_wake, self._relay_wake, self._lease_wake):
            event.set()

    # -- the main thread -------------------------------------------------------

    def run(self) -> int:
        """Run until request_stop(); returns the exit code (0)."""
        self.time.sync(force=True)
        self.load_schedules(self.settings)
        # What loading left lives for the run: keep it out of every full collection.
        # No gc.collect() first: it would free next to nothing (0 objects with 100,000
        # stored schedules, 30 after a 10,000-schedule file) for 40 ms before the first fire.
        gc.freeze()
        self._start()
        self.notifier.ready(self._describe())
        log.info("started", extra={"holder": self.crew.holder, "partitions": self.crew.count})
        while not self._stop.is_set():
            self._control.wait(MAX_IDLE)
            self._control.clear()
            if self._reload_pending and not self._stop.is_set():
                self._reload_pending = False
                self.reload()
        self._shutdown()
        return 0

    def load_schedules(self, settings: Settings) -> None:
        """Make the file's schedules the store's; retries while the database is down."""
        while not self._stop.is_set():
            try:
                now = self.time.now()
                result = self.store.load_file(settings.schedules, _first_after(now))
                self._record_missed(settings.schedules, result, now)
            except SchemaError:
                raise
            except StoreError as exc:
                self._stop.wait(STORE_RETRY.delay(self._failures.failed("load", exc)))
                continue
            self._failures.recovered("load")
            log.info(
                "schedules loaded",
                extra={
                    "file": str(settings.path) if settings.path else None,
                    "schedules": len(settings.schedules),
                    "added": len(result.added),
                    "changed": len(result.changed),
                    "removed": len(result.removed),
                },
            )
            self._tick_wake.set()
            return

    def _record_missed(
        self, schedules: Sequence[Schedule], result: ReconcileResult, now: datetime
    ) -> None:
        """A one-off loaded with its instant already past is missed at once (SPEC §4).

        Only one the store will not decide (no next instant): a one-off that
        fell due while no daemon ran is left to its misfire policy.
        """
        loaded = set(result.added).union(result.changed)
        decisions = [
            missed
            for s in schedules
            if isinstance(s.spec, Once)
            and s.name in loaded
            and (missed := planner.missed_once(s, now)) is not None
            and self.store.get(s.name).next_at is None
        ]
        if decisions:
            self.store.record(None, decisions, [])

    def reload(self) -> None:
        """SIGHUP: re-read the TOML file; a broken one keeps the last good schedules.

        Whatever loading raises, the daemon goes on: a broken file, a name the API owns
        and a schema problem are BeatdErrors; anything else is a defect of ours, told in
        one line too (its traceback at debug level).
        """
        self.notifier.reloading()
        try:
            settings = self._reload_settings(self.settings.path)
            self.load_schedules(settings)
        except Exception as exc:
            more = len(exc.problems) - 1 if isinstance(exc, ConfigError) else 0
            extra = f" (and {more} more problems)" if more > 0 else ""
            text = str(exc) if isinstance(exc, BeatdError) else f"{type(exc).__name__}: {exc}"
            log.error(f"reload failed, keeping the last good schedules: {text}{extra}")
            log.debug("the reload's failure", exc_info=True)
        else:
            self.settings = settings
        finally:
            self.notifier.ready(self._describe())

    def _start(self) -> None:
        loops: dict[str, Callable[[], None]] = {
            "lease": self._lease_loop,
            "tick": self._tick_loop,
            "relay": self._relay_loop,
            "watcher": self._watch_loop,
            "pruner": self._prune_loop,
        }
        for name, target in loops.items():
            thread = threading.Thread(target=target, name=f"beatd-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping: no new fires; publishing what is due, then releasing the lease")
        self._wake_all()
        lease, tick, relay, watcher, pruner = self._threads
        tick.join(DRAIN_TIMEOUT)  # a write still running after this is fenced by the release
        relay.join(DRAIN_TIMEOUT + 5)
        self._release.set()
        self._lease_wake.set()
        lease.join(10)
        watcher.join(CHANGE_POLL * 4)
        pruner.join(CHANGE_POLL * 4)  # a batch is one short transaction
        log.info("stopped")

    # -- the loops -------------------------------------------------------------

    def _say_standby(self) -> bool | None:
        """Log once per standby spell who leads; None while the database cannot say."""
        try:
            lease = self.store.current() if self.crew.count == 1 else None
        except StoreError:
            return None
        if lease is None:
            return None  # free: the next step takes it, or says who did
        log.info(
            "standby: another instance leads",
            extra={"leader": lease.holder, "epoch": lease.epoch, "holder": self.leader.holder},
        )
        return True

    def _lease_loop(self) -> None:
        held: tuple[int, ...] = ()
        standby_seen: bool | None = None
        while not self._release.is_set():
            self.time.sync()
            wait = self.crew.step(acquire=not self._stop.is_set())
            if all(x.renew_failures == 0 for x in self.crew.leaders):
                self._failures.recovered("lease")
            now_held = tuple(x.partition.index for x in self.crew.held())
            self.metrics.is_leader.set(1 if now_held else 0)
            if not now_held and standby_seen is None:
                standby_seen = self._say_standby()
            if now_held != held:
                gained = set(now_held) - set(held)
                self._count_held(held, now_held)
                held = now_held
                if gained:  # not this loop: a renew now would only slow the first tick down
                    self._tick_wake.set()
                    self._relay_wake.set()
                    # Connect while the first tick decides, not once its batch is ready.
                    threading.Thread(target=self.publisher.check, daemon=True).start()
                else:
                    self._wake_all()
                if not now_held:
                    standby_seen = None
                self._update_status()
            self._lease_wake.wait(wait)
            self._lease_wake.clear()
        self.crew.release()
        self.metrics.is_leader.set(0)
        self._count_held(held, ())

    def _count_held(self, before: tuple[int, ...], after: tuple[int, ...]) -> None:
        """The per-partition gauge (only with partitions: P = 1 has beatd_is_leader)."""
        if self.crew.count == 1:
            return
        for index in set(before) | set(after):
            self.metrics.holds.labels(partition=str(index)).set(1 if index in after else 0)
        if after != before:
            log.info(
                "partitions held",
                extra={"partitions": list(after), "of": self.crew.count, "share": self.crew.share},
            )

    def _tick_loop(self) -> None:
        while not self._stop.is_set():
            wait = MAX_IDLE
            try:
                for ticker in self.tickers:
                    if ticker.leader.lease is None:
                        continue
                    due = ticker.tick(self.time.now())
                    wait = min(wait, _seconds_until(due, self.time.now(), MAX_IDLE) or 0.02)
                self._failures.recovered("tick")
                self._broken = False
            except StoreError as exc:
                wait = STORE_RETRY.delay(self._failures.failed("tick", exc))
            except Exception as exc:
                self._broken = True
                self._failures.failing("tick", f"{type(exc).__name__}: {exc}")
                log.exception("tick failed")
                wait = MAX_IDLE
            self._beat()
            if self.notifier.watchdog_interval is not None:
                wait = min(wait, self.notifier.watchdog_interval / 2)
            self._tick_wake.wait(wait)
            self._tick_wake.clear()
        self._decided.set()

    def _beat(self) -> None:
        """The tick loop is alive: note it, and ping the watchdog unless the loop is failing."""
        now = self._heartbeat = self.clock.monotonic()
        interval = self.notifier.watchdog_interval
        if interval is not None and not self._broken and now - self._pinged >= interval / 2:
            self._pinged = now
            self.notifier.watchdog()

    def _relay_loop(self) -> None:
        deadline: float | None = None
        counted = 0.0  # when the backlog was last counted (a COUNT is not free)
        while True:
            if self._decided.is_set() and deadline is None:  # the last fires recorded are in
                deadline = self.clock.monotonic() + DRAIN_TIMEOUT
            wait, drained = 1.0, False
            try:
                wait = self._relay_all()
                if deadline is not None:  # fires recorded ahead are due this soon
                    drained = all(
                        r.drained(self.time.now(), LOOKAHEAD + DRAIN_MARGIN) for r in self.relays
                    )
                leading = bool(self.crew.held())
                if self.clock.monotonic() - counted >= BACKLOG_EVERY:
                    counted = self.clock.monotonic()
                    self._count_backlog()
                self._failures.recovered("relay")
                broken = [r.last_error for r in self.relays if r.last_error is not None]
                if leading and broken:
                    self._failures.failing("broker", broken[0])
                else:
                    self._failures.recovered("broker")
            except StoreError as exc:
                wait = STORE_RETRY.delay(self._failures.failed("relay", exc))
            except Exception as exc:
                self._failures.failing("relay", f"{type(exc).__name__}: {exc}")
                log.exception("relay failed")
                wait = 1.0
            self._update_status()
            if deadline is not None and (drained or self.clock.monotonic() > deadline):
                self._settle_quietly()
                return  # drained what is due (or out of time): the rest waits for the next leader
            self._relay_wake.wait(wait)
            self._relay_wake.clear()

    def _count_backlog(self) -> None:
        """Each held partition's unsent fires (one scan), 0 for the others; status says the sum."""
        held = {x.partition.index for x in self.crew.held()}
        counts = self.store.backlogs(self.crew.count) if held else [0] * self.crew.count
        mine = [n if index in held else 0 for index, n in enumerate(counts)]
        for relay, n in zip(self.relays, mine, strict=True):
            relay.metrics.backlog.set(n)
        self._backlog = sum(mine)

    def _relay_all(self) -> float:
        """Run each held partition's relay; seconds until one of them has work."""
        wait = 1.0
        for relay in self.relays:
            next_at = relay.run_once(self.time.now())
            if relay.leader.lease is not None:
                wait = min(wait, _seconds_until(next_at, self.time.now(), 1.0))
            if self.crew.count > 1:
                self._hand_over(relay)
        return wait

    def _hand_over(self, relay: Relay) -> None:
        """A partition being handed over: once its relay has drained it, the crew releases it."""
        leader = self.crew.leaders[relay.partition.index]
        index = relay.partition.index
        if not leader.handing_over:
            self._handovers.pop(index, None)
            return
        mono = self.clock.monotonic()
        deadline = self._handovers.setdefault(index, mono + DRAIN_TIMEOUT)
        if relay.drained(self.time.now(), LOOKAHEAD + DRAIN_MARGIN) or mono > deadline:
            relay.settle()
            self._handovers.pop(index, None)
            self.crew.drained(leader)
            self._lease_wake.set()

    def _watch_loop(self) -> None:
        waiter: Any = getattr(self.store, "wait_for_change", None)
        seen: int | None = None
        while not self._stop.is_set():
            try:
                if seen is None:
                    seen = self.store.change_count()
                if waiter is not None:
                    count = int(waiter(seen, CHANGE_POLL))
                else:
                    self._stop.wait(CHANGE_POLL)
                    count = self.store.change_count()
                self._failures.recovered("watcher")
            except BeatdError as exc:
                # capped low: after an outage, changes must be seen again within a second
                self._stop.wait(min(STORE_RETRY.delay(self._failures.failed("watcher", exc)), 1.0))
                continue
            if count != seen:
                if count < seen:  # the counter only grows: these are not the rows we loaded
                    log.warning(
                        "the database lost beatd's rows (its change counter went back from "
                        f"{seen} to {count}: recreated or restored?); loading the file again"
                    )
                    self.request_reload()
                seen = count
                for relay in self.relays:
                    relay.poke()  # e.g. a trigger from another process
                self._tick_wake.set()
                self._relay_wake.set()

    def _prune_loop(self) -> None:
        """Delete expired history in small batches while leading (SPEC §7 keep_history)."""
        wait = PRUNE_EVERY  # the first round waits too: a new term's first fires come first
        while not self._stop.wait(wait):
            wait = PRUNE_EVERY
            if not self.leader.is_leading():
                continue
            before = self.time.now() - self.settings.keep_history
            try:
                pruned = self.store.prune(before, PRUNE_BATCH)
            except StoreError as exc:
                wait = STORE_RETRY.delay(self._failures.failed("pruner", exc))
                continue
            self._failures.recovered("pruner")
            self.metrics.pruned.inc(pruned)
            if pruned == PRUNE_BATCH:
                wait = PRUNE_PAUSE  # more to delete: the next batch after a breath
            log.debug("history pruned", extra={"rows": pruned, "before": before.isoformat()})

    # -- helpers ---------------------------------------------------------------

    def _settle_quietly(self) -> None:
        """Mark confirmed fires sent before exiting; if the database is down they go again."""
        try:
            for relay in self.relays:
                relay.settle()
        except StoreError as exc:
            log.warning(f"could not mark the last confirmed fires sent: {exc}")

    def _describe(self) -> str:
        if self.crew.count > 1:
            held = [str(x.partition.index) for x in self.crew.held()]
            if not held:
                return f"standby ({self.crew.holder}), {self.crew.count} partitions"
            return f"partitions {','.join(held)} of {self.crew.count}, backlog {self._backlog}"
        lease = self.leader.lease
        if lease is None:
            return f"standby ({self.leader.holder})"
        return f"leader epoch {lease.epoch}, backlog {self._backlog}"

    def _update_status(self) -> None:
        status = self._describe()
        if status != self._status:
            self._status = status
            self.notifier.status(status)
