"""Importers: schedules from Celery beat, django-celery-beat and APScheduler 3 (SPEC §8).

Each source module reads what its system stored and returns a `Batch`: one
`Entry` per schedule it converted (a beatd schedule table, the source line
it came from, notes) and one `Skip` per schedule it could not convert, with
the reason. `finish` then does what every source shares:

- names: kept where valid, else made valid (and unique), with a note;
- validation: each table goes through the codec, as the TOML file would;
- the cutover: a schedule with no fire left after now is skipped, so
  nothing from the past fires (beatd never fires instants before a schedule
  is stored, SPEC §4; this catches one-off times already past);
- DST: where the entry carries the source's own next-fire function, beatd's
  fires around every DST change of the next year are compared with the
  source's, and each difference becomes a note (SPEC §3 wins).

The source modules import their system's library (Celery, APScheduler)
only when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from beatd import timing
from beatd.codec import MAX_NAME, Defaults, check_name, format_instant, schedule_from_table
from beatd.errors import ConfigError
from beatd.model import Schedule, Source
from beatd.timing.zones import UTC_KEYS, year_offsets

NextFire = Callable[[datetime], "datetime | None"]
"""The source's own computation: its first fire strictly after an aware instant."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One converted schedule."""

    name: str
    table: Mapping[str, Any]  # beatd TOML keys, values as TOML would hold them
    origin: str  # one line: where it came from, as the source spelled it
    notes: tuple[str, ...] = ()
    disabled: str | None = None  # why it comes in disabled (paused with this note in the DB)
    source_next: NextFire | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """A schedule that was not converted, and why."""

    name: str
    reason: str


@dataclass
class Batch:
    """What one source yielded: `source` names it in the output's header."""

    source: str
    entries: list[Entry] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Imported:
    """A converted, validated schedule ready to write."""

    entry: Entry
    schedule: Schedule


def finish(batch: Batch, now: datetime) -> tuple[list[Imported], list[Skip]]:
    """Valid names, validated tables, the cutover and the DST notes (see the module doc)."""
    imported: list[Imported] = []
    skipped = list(batch.skipped)
    taken: set[str] = set()
    for entry in batch.entries:
        name = _valid_name(entry.name, taken)
        if name != entry.name:
            entry = _note(
                entry, f"name {entry.name!r} is not a valid beatd name: imported as {name!r}"
            )
        entry = replace(entry, name=name)
        try:
            schedule = schedule_from_table(name, entry.table, Defaults(), Source.API)
        except ConfigError as exc:
            skipped.append(Skip(entry.name, "; ".join(exc.problems)))
            continue
        if timing.next_after(schedule, now) is None:
            shown = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            reason = f"no fire left after the cutover ({shown}): its time has passed"
            skipped.append(Skip(entry.name, reason))
            continue
        taken.add(name)
        if entry.source_next is not None:
            for note in dst_differences(schedule, entry.source_next, now):
                entry = _note(entry, note)
        imported.append(Imported(entry, schedule))
    return imported, skipped


def instant(value: datetime) -> str:
    """An instant for a schedule table: ISO-8601 UTC, whole seconds (beatd's resolution)."""
    return format_instant(value.replace(microsecond=0))


def zone_name(zone: object) -> str | None:
    """The IANA name of a tzinfo (zoneinfo's key, pytz's zone; UTC for datetime's), or None."""
    if zone is UTC:
        return "UTC"
    name = getattr(zone, "key", None) or getattr(zone, "zone", None)
    return str(name) if name else None


def _note(entry: Entry, note: str) -> Entry:
    return replace(entry, notes=(*entry.notes, note))


def _valid_name(name: str, taken: set[str]) -> str:
    if check_name(name) is None and name not in taken:
        return name
    text = "".join(ch if ch.isprintable() else "_" for ch in str(name)).strip()
    text = text[:MAX_NAME].strip() or "schedule"
    candidate, n = text, 1
    while candidate in taken:
        n += 1
        suffix = f"-{n}"
        candidate = text[: MAX_NAME - len(suffix)] + suffix
    return candidate


# -- DST: the source's own fires against beatd's ------------------------------------

HORIZON = timedelta(days=366)
_BEFORE = timedelta(hours=3)  # each window opens this long before a change ...
_AFTER = timedelta(hours=27)  # ... and closes this long after (the next day's fire too)
_MAX_FIRES = 5000  # per window and side: a per-second schedule is compared for 5000 s


def dst_differences(schedule: Schedule, source_next: NextFire, now: datetime) -> list[str]:
    """One note per DST change of the next year where the source fires otherwise than beatd."""
    if schedule.kind not in ("cron", "rrule") or schedule.timezone.key in UTC_KEYS:
        return []
    if schedule.max_fires is not None:  # a few fires right after the cutover
        return []
    start = schedule.start or now
    end = min(schedule.end or now + HORIZON, now + HORIZON)
    notes: list[str] = []
    for change in dst_changes(schedule, start - _AFTER, end):  # a change just past counts too
        lo, hi = max(change - _BEFORE, start), change + _AFTER
        ours = _window(lambda at: timing.next_after(schedule, at), lo, hi, start, end)
        theirs = _window(source_next, lo, hi, start, end)
        if ours != theirs:
            notes.append(_difference(schedule, change, theirs - ours, ours - theirs))
    return notes


def dst_changes(schedule: Schedule, start: datetime, end: datetime) -> Iterator[datetime]:
    """The instants (aware UTC) in [start, end) where the schedule's zone changes offset."""
    for year in range(start.year, end.year + 1):
        for change in year_offsets(schedule.timezone, year).transitions:
            at = change.at.replace(tzinfo=UTC)
            if start <= at < end:
                yield at


def _window(
    next_fire: NextFire, lo: datetime, hi: datetime, start: datetime, end: datetime
) -> set[datetime]:
    """Fires in (lo, hi] and the first one after hi, chained one from the other; of
    those, the ones within [start, end]."""
    found: set[datetime] = set()
    at: datetime | None = lo
    while at is not None and len(found) < _MAX_FIRES:
        following = next_fire(at)
        if following is None or following <= at:  # done, or the source does not advance
            break
        at = following.astimezone(UTC)
        found.add(at)
        if at > hi:
            break
    return {at for at in found if start <= at <= end}


def _difference(
    schedule: Schedule, change: datetime, theirs: set[datetime], ours: set[datetime]
) -> str:
    zone = schedule.timezone

    def show(instants: set[datetime]) -> str:
        shown = [at.astimezone(zone).isoformat(sep=" ") for at in sorted(instants)[:4]]
        more = f" and {len(instants) - 4} more" if len(instants) > 4 else ""
        return (", ".join(shown) + more) if shown else "nothing"

    day = change.astimezone(zone).date().isoformat()
    return (
        f"DST change of {day} in {zone.key}: the source fires {show(theirs)} "
        f"where beatd fires {show(ours)} (beatd's DST rule)"
    )
