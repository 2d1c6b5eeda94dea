"""The misfire policy, as a pure function: (stored schedule, now) -> what to record.

`plan` reads no clock and does no I/O. It decides every instant in
[stored.next_at, horizon] (the horizon is `now`, or a little after it when
the tick records ahead):

    past grace     missed longer ago than `grace`      dropped "past grace"
    missed         late, and due before `since`        per policy (below)
    on time        now - instant <= ON_TIME,           sent (unless max_fires)
                   or due since `since`

ON_TIME (1 s) absorbs a tick that wakes a little late: a fire 5 ms or 800 ms
after its instant is not a misfire. `since` is when the current leader began
deciding (its term): an instant that fell due while a leader was deciding is
never "missed", however late a busy tick gets to it; missed instants are the
ones no leader was there for (down, failed over), and those from before the
schedule was stored (a `once` added in the past). Policies for missed
instants (SPEC §4):
`coalesce` sends only the latest due instant and drops the others
("coalesced"); `all` sends them oldest first, at most `cap` per catch-up, and
drops the rest ("catch-up cap"); `skip` drops them ("missed (skip)").

Work is bounded: a run of more than DETAIL dropped instants is recorded as
ONE summary drop at its first instant (reason "coalesced: 31535999 instants
from … to …"; the exact count for interval schedules, "more than 1000"
otherwise), found with `timing.latest_at_or_before` instead of a walk.
Disabled schedules decide nothing; their next_at just moves past now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from beatd import timing
from beatd.errors import ConfigError
from beatd.ids import fire_id
from beatd.model import (
    Advance,
    Decision,
    Every,
    Message,
    Misfire,
    Once,
    Outcome,
    Schedule,
    StoredSchedule,
)

ON_TIME = timedelta(seconds=1)
CATCH_UP_CAP = 1000
DETAIL = 1000  # longest run of drops recorded one row per instant
_TICK = timedelta(microseconds=1)

Builder = Callable[[Schedule, datetime, datetime], Message]
"""Builds the outbox message of a fire: (schedule, scheduled_for, publish_at).

The message's fire_id is the fire's id (`ids.fire_id` of the name and
scheduled_for); the decision reuses it rather than computing it again.
"""


@dataclass(frozen=True, slots=True)
class Plan:
    decisions: tuple[Decision, ...]  # in instant order
    advance: Advance | None  # None when the schedule was not due

    @property
    def sends(self) -> int:
        return sum(d.outcome is Outcome.PENDING for d in self.decisions)


def plan(
    stored: StoredSchedule,
    now: datetime,
    build: Builder,
    *,
    cap: int = CATCH_UP_CAP,
    on_time: timedelta = ON_TIME,
    since: datetime | None = None,
    horizon: datetime | None = None,
) -> Plan:
    """Decide every instant of `stored` up to `horizon` (default `now`), and what comes next.

    Lateness is measured at `now`; instants in (now, horizon] are on time
    (recorded ahead, published at their instant by the relay).
    """
    until = now if horizon is None else max(horizon, now)
    s, first = stored.schedule, stored.next_at
    if first is None or first > until:
        return Plan((), None)
    out = _Builder(s, until, build)
    latest = out.latest(first)
    if not s.enabled or latest is None:
        next_at = timing.next_after(s, until)
        return Plan((), Advance(s.name, stored.version, next_at, stored.last_at, 0))
    # Region boundaries, each the first instant at or after a cut-off.
    on_time_cut = now - on_time
    if since is not None:  # ...but never an instant from before the schedule was stored
        on_time_cut = min(on_time_cut, max(since, stored.created_at))
    if first >= on_time_cut:  # the common case, all on time: no grace or misfire to weigh
        out.drop_run(out.send_run(first, None, limit=cap), None, "catch-up cap")
        return out.finish(stored, latest)
    in_grace: datetime | None = first
    if s.grace is not None:
        grace_cut = min(now - max(s.grace, on_time), on_time_cut)
        in_grace = _first_at_or_after(s, grace_cut, first, latest)
    on_time_first = _first_at_or_after(s, on_time_cut, first, latest)
    out.drop_run(first, in_grace, "past grace")
    if s.misfire is Misfire.COALESCE and on_time_first is None:
        if in_grace is not None:  # only missed instants: the latest stands for them all
            out.drop_run(in_grace, latest, "coalesced")
            out.send(latest)
        return out.finish(stored, latest)
    if s.misfire is Misfire.ALL:
        rest = out.send_run(in_grace, on_time_first, limit=cap)
        out.drop_run(rest, on_time_first, "catch-up cap")
    else:
        reason = "coalesced" if s.misfire is Misfire.COALESCE else "missed (skip)"
        out.drop_run(in_grace, on_time_first, reason)
    # On-time instants are all sent; the cap only bounds a term stuck for ages.
    out.drop_run(out.send_run(on_time_first, None, limit=cap), None, "catch-up cap")
    return out.finish(stored, latest)


MISSED_WHEN_STORED = "missed: the one-off instant was already past when it was stored"


def missed_once(schedule: Schedule, now: datetime) -> Decision | None:
    """The drop a one-off stored with its instant already past gets at once (SPEC §4).

    Its store row has no next instant, so the leader never decides it; this
    decision is its history row. Recording it again is harmless: the fire
    log keeps one row per (schedule, instant).
    """
    spec = schedule.spec
    if not isinstance(spec, Once) or spec.at > now:
        return None
    at = spec.at
    return Decision(
        schedule.name, at, fire_id(schedule.name, at), Outcome.DROPPED, MISSED_WHEN_STORED
    )


def _first_at_or_after(
    s: Schedule, cut: datetime, first: datetime, latest: datetime
) -> datetime | None:
    """The first instant >= cut within [first, latest], or None."""
    if cut <= first:
        return first
    found = timing.next_after(s, cut - _TICK)
    return found if found is not None and found <= latest else None


class _Builder:
    """Collects decisions in instant order over [first, latest]."""

    def __init__(self, s: Schedule, until: datetime, build: Builder) -> None:
        self.s, self.until, self.build = s, until, build
        self.decisions: list[Decision] = []
        self._next: tuple[datetime, datetime | None] | None = None

    def next_after(self, at: datetime) -> datetime | None:
        """timing.next_after, remembered for one instant: finish asks again for the last sent."""
        if self._next is None or self._next[0] != at:
            self._next = (at, timing.next_after(self.s, at))
        return self._next[1]

    def latest(self, first: datetime) -> datetime | None:
        """The latest instant in [first, until], or None.

        Mostly `first` is the only one (one instant due): two next_after calls
        tell, and the send and the advance reuse the first of them, where
        latest_at_or_before would search (a cron schedule evaluates more).
        """
        after = self.next_after(first)
        if after is None or after > self.until:
            found = timing.next_after(self.s, first - _TICK)
            if found == first:
                return found
        return timing.latest_at_or_before(self.s, self.until, first)

    def send(self, at: datetime) -> None:
        publish_at = at + timing.jitter_offset(self.s.name, at, self.s.jitter)
        try:
            message = self.build(self.s, at, publish_at)
        except ConfigError as exc:  # validated at the edge; never let one poison a tick
            self.drop(at, f"cannot build the message: {exc}")
            return
        self.decisions.append(
            Decision(self.s.name, at, message.fire_id, Outcome.PENDING, None, message)
        )

    def drop(self, at: datetime, reason: str) -> None:
        self.decisions.append(
            Decision(self.s.name, at, fire_id(self.s.name, at), Outcome.DROPPED, reason)
        )

    def send_run(
        self, start: datetime | None, end: datetime | None, limit: int | None = None
    ) -> datetime | None:
        """Send instants in [start, end) (end None: to the horizon); returns the first not sent."""
        at = start
        sent = 0
        while at is not None and at <= self.until and (end is None or at < end):
            if limit is not None and sent >= limit:
                return at
            self.send(at)
            sent += 1
            at = self.next_after(at)
        return None

    def drop_run(self, start: datetime | None, end: datetime | None, reason: str) -> None:
        """Drop instants in [start, end) (end None: to the horizon): one row each, or a summary."""
        if start is None or (end is not None and start >= end):
            return
        stop = end - _TICK if end is not None else self.until
        run: list[datetime] = []
        at: datetime | None = start
        while at is not None and at <= stop and len(run) <= DETAIL:
            run.append(at)
            at = self.next_after(at)
        if len(run) <= DETAIL:
            for instant in run:
                self.drop(instant, reason)
            return
        last = timing.latest_at_or_before(self.s, stop, start) or run[-1]
        self.drop(
            start,
            f"{reason}: {_count(self.s, start, last)} instants from {_iso(start)} to {_iso(last)}",
        )

    def finish(self, stored: StoredSchedule, latest: datetime) -> Plan:
        """Apply max_fires and compute the advance."""
        decisions, last, next_at = self.decisions, latest, self.next_after(latest)
        if self.s.max_fires is not None:
            room = self.s.max_fires - stored.fires
            sends = [i for i, d in enumerate(decisions) if d.outcome is Outcome.PENDING]
            if room <= 0:
                decisions, next_at = [], None
            elif len(sends) >= room:
                cut = sends[room - 1]
                decisions, next_at = decisions[: cut + 1], None
                last = decisions[cut].scheduled_for
        added = sum(d.outcome is Outcome.PENDING for d in decisions)
        last_at = last if decisions else stored.last_at
        advance = Advance(self.s.name, stored.version, next_at, last_at, added)
        return Plan(tuple(decisions), advance)


def _count(s: Schedule, first: datetime, last: datetime) -> str:
    if isinstance(s.spec, Every) and s.spec.period > timedelta(0):
        return str((last - first) // s.spec.period + 1)
    return f"more than {DETAIL}"


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
