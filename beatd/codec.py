"""One schedule's table (TOML, API keywords, the store's JSON) <-> model.Schedule.

`schedule_from_table` is the single validation path: the TOML file, the
Python API and the CLI all go through it. It checks every key and reports
every problem at once, one line each, naming the schedule and the key.
`schedule_to_table` is its inverse: a JSON-serialisable canonical table with
instants as ISO-8601 UTC (`Z`) and durations as "1h30m" strings.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from beatd import timing
from beatd.durations import format_duration, parse_duration
from beatd.errors import ConfigError
from beatd.model import (
    EPOCH,
    UTC_ZONE,
    Cron,
    Every,
    Format,
    Misfire,
    Once,
    RRule,
    Schedule,
    Source,
    Spec,
    kind_of,
)
from beatd.publish.messages import TTL_MAX, frame_problem, header_problems
from beatd.timing.zones import MAX_YEAR, MIN_YEAR, next_instant

KINDS = ("cron", "every", "rrule", "at")
OPTIONS = (
    "task",
    "anchor",
    "args",
    "kwargs",
    "queue",
    "exchange",
    "routing_key",
    "headers",
    "format",
    "timezone",
    "start",
    "end",
    "jitter",
    "expires",
    "grace",
    "misfire",
    "max_fires",
    "history_limit",
    "enabled",
    "priority",
)
KEYS = KINDS + OPTIONS
_KEY_SET = frozenset(KEYS)
_CELERY_KEYS = frozenset({"schedule", "options", "relative"})  # a Celery beat_schedule entry's
_CELERY_HINT = (
    " (a Celery beat_schedule key: here the timing is cron, every, rrule or at and each option "
    "is a key of its own; `beatd import celery MODULE:APP` converts a Celery app's schedule)"
)
MAX_NAME = 200  # characters: the schema's name columns
MAX_TASK = 255  # characters of a task name
MAX_SHORT = 255  # bytes of UTF-8: an AMQP short string (exchange, routing key, queue name)
MAX_PAYLOAD = 64 * 1024  # bytes of serialised JSON for args, kwargs and headers each
MAX_DEPTH = 32  # nesting levels of args, kwargs and headers


@dataclass(frozen=True, slots=True)
class Defaults:
    """What a schedule inherits from `[beatd]` when it does not say."""

    timezone: ZoneInfo = UTC_ZONE
    format: Format = Format.CELERY


@dataclass
class _Problems:
    """Collects one line per problem for one schedule."""

    name: str
    lines: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        key, message = _clip(key, 80), _clip(message, 240)  # a value quoted in it may be huge
        self.lines.append(
            f"schedule {self.name!r}: {key}: {message}"
            if key
            else f"schedule {self.name!r}: {message}"
        )


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def check_name(name: object) -> str | None:
    """Why `name` is not a valid schedule name, or None when it is."""
    if not isinstance(name, str):
        return f"a schedule name must be a string, got {type(name).__name__}"
    if not name:
        return "a schedule name must not be empty"
    if len(name) > MAX_NAME:
        return f"a schedule name must be at most {MAX_NAME} characters, got {len(name)}"
    if not name.isprintable():
        return f"a schedule name must be printable (no control characters): {name!r}"
    if name != name.strip():
        return f"a schedule name must not start or end with whitespace: {name!r}"
    return None


def show_key(key: object) -> str:
    """A TOML key as one printable line: itself, or its repr when it holds control characters."""
    text = str(key)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def did_you_mean(word: str, choices: Any) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def to_utc(instant: datetime) -> datetime:
    """An aware instant as UTC; ValueError when its offset carries it past the calendar
    (``9999-12-31T23:00:00-14:00``, where Python's datetime overflows)."""
    try:
        return instant.astimezone(UTC)
    except OverflowError:
        raise ValueError(_out_of_range(instant)) from None


def in_range(instant: datetime) -> datetime:
    """An aware instant as UTC, or ValueError outside the years beatd handles
    (MIN_YEAR+1 to MAX_YEAR-1: the DST rule needs a year of room at both ends)."""
    utc = to_utc(instant)
    if not MIN_YEAR < utc.year < MAX_YEAR:
        raise ValueError(_out_of_range(instant))
    return utc


def _out_of_range(instant: datetime) -> str:
    return (
        f"{instant.isoformat()} is out of range: "
        f"instants from year {MIN_YEAR + 1} to {MAX_YEAR - 1} are supported"
    )


def check_instant(value: datetime, what: str) -> datetime:
    """An instant given to a command or the API: aware and in range, as UTC; else ConfigError."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(f"{what}: needs a time zone (an aware datetime)")
    try:
        return in_range(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def parse_zone(value: object) -> ZoneInfo:
    """An IANA zone from its name; ValueError with a did-you-mean hint otherwise."""
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected an IANA time zone name such as 'Europe/Berlin', got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r}{_zone_hint(value)}") from None


# Abbreviations people write for a zone: not IANA names, and the closest
# spelling of one is rarely the zone meant ('CEST' is not 'EST').
_ABBREVIATIONS: Mapping[str, tuple[str, ...]] = {
    "CEST": ("Europe/Berlin", "Europe/Paris"),
    "EEST": ("Europe/Athens", "Europe/Helsinki"),
    "WEST": ("Europe/Lisbon",),
    "BST": ("Europe/London",),
    "IST": ("Asia/Kolkata", "Europe/Dublin"),
    "MSK": ("Europe/Moscow",),
    "EDT": ("America/New_York",),
    "CST": ("America/Chicago", "Asia/Shanghai"),
    "CDT": ("America/Chicago",),
    "MDT": ("America/Denver",),
    "PST": ("America/Los_Angeles",),
    "PDT": ("America/Los_Angeles",),
    "AKST": ("America/Anchorage",),
    "AKDT": ("America/Anchorage",),
    "BRT": ("America/Sao_Paulo",),
    "JST": ("Asia/Tokyo",),
    "KST": ("Asia/Seoul",),
    "HKT": ("Asia/Hong_Kong",),
    "SGT": ("Asia/Singapore",),
    "AEST": ("Australia/Sydney",),
    "AEDT": ("Australia/Sydney",),
    "ACST": ("Australia/Adelaide",),
    "AWST": ("Australia/Perth",),
    "NZST": ("Pacific/Auckland",),
    "NZDT": ("Pacific/Auckland",),
}


def _zone_hint(value: str) -> str:
    """Which IANA zones the user may mean: by abbreviation, by city, else by spelling."""
    meant = _ABBREVIATIONS.get(value.strip().upper())
    if meant is not None:
        names = " or ".join(repr(name) for name in meant)
        return f" (an abbreviation, not a zone: use an IANA name such as {names})"
    city = value.strip().replace(" ", "_").lower()
    for name in _zone_names():
        if "/" in name and name.rsplit("/", 1)[1].lower() == city:
            return f" (did you mean {name!r}?)"
    return did_you_mean(value, _zone_names())


@lru_cache(maxsize=1)
def _zone_names() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


@dataclass(frozen=True, slots=True)
class _WallTime:
    """One wall time as a fixed wall source, so zones.py's DST rule places it."""

    wall: datetime
    frequent: bool = False

    def next_wall(self, lo: datetime) -> datetime | None:
        return self.wall if lo <= self.wall else None


def localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """A wall time in `zone` as an aware UTC instant, by the DST rule for fixed times.

    An ambiguous time (fall back) is its first occurrence; a time that does
    not exist (spring forward) is the first instant after the gap.
    """
    if not MIN_YEAR < naive.year < MAX_YEAR:
        raise ValueError(f"year out of range: {naive.isoformat()}")
    found = next_instant(_WallTime(naive.replace(tzinfo=None)), zone, naive - timedelta(days=2))
    if found is None:  # pragma: no cover - a single wall time always maps somewhere
        raise ValueError(f"{naive.isoformat()} does not exist in {zone.key}")
    return found.replace(tzinfo=UTC)


_O = TypeVar("_O")
_R = TypeVar("_R")


def _cached_for_text(parse: Callable[[object, _O], _R]) -> Callable[[object, _O], _R]:
    """`parse`, cached when the value is text: the anchors and periods of a large file
    repeat, and what they parse to is immutable (other values are parsed each time)."""
    cached = lru_cache(maxsize=1024)(parse)

    def call(value: object, option: _O) -> _R:
        return cached(value, option) if type(value) is str else parse(value, option)

    return call


@_cached_for_text
def parse_instant(value: object, zone: ZoneInfo) -> datetime:
    """An ISO-8601 instant (or a TOML/Python datetime) as aware UTC; naive = in `zone`."""
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"expected an ISO-8601 date and time such as '2026-12-01T09:00:00+01:00', "
                f"got {value!r}"
            ) from None
        if len(text) <= 10:  # a bare date is not an instant
            raise ValueError(f"expected a date and a time, got only a date: {value!r}")
    elif isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date | time):
        raise ValueError(f"expected a date and a time, got {value.isoformat()!r}")
    else:
        raise ValueError(
            f"expected an ISO-8601 date and time such as '2026-12-01T09:00:00+01:00', got {value!r}"
        )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return localize(parsed, zone)
    return to_utc(parsed)


def format_instant(value: datetime) -> str:
    """ISO-8601 in UTC with a `Z`; microseconds only when there are some."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- per-key parsers: each returns the parsed value or raises ValueError ---------


def _shared_text(value: object, *, empty: bool = False) -> str:
    """A checked string, interned: a hundred thousand schedules share one task or queue name."""
    text = _text(value, empty=empty)
    return sys.intern(text) if type(text) is str else text


def _text(value: object, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_show(value)}")
    if not empty and not value.strip():
        raise ValueError("must not be empty")
    if not value.isprintable():
        raise ValueError(f"must not contain control characters: {value!r}")
    return value


def _duration(value: object, *, zero_ok: bool) -> timedelta:
    return _check_duration(value, zero_ok)


@_cached_for_text
def _check_duration(value: object, zero_ok: bool) -> timedelta:
    delta = parse_duration(value)
    if delta < timedelta(0) or (not zero_ok and delta == timedelta(0)):
        bound = "0s or more" if zero_ok else "more than 0s"
        raise ValueError(f"must be {bound}, got {value!r}")
    return delta


def _expires(value: object) -> timedelta:
    delta = _duration(value, zero_ok=False)
    if delta > TTL_MAX:
        raise ValueError(
            f"must be at most {format_duration(TTL_MAX)} (RabbitMQ refuses a message TTL "
            f"over 10 years), got {value!r}"
        )
    return delta


def _choice(value: object, enum: Any) -> Any:
    choices = [str(member) for member in enum]
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}{hint}")
    return enum(value)


def _integer(value: object, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_show(value)}")
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise ValueError(f"must be {span}, got {value}")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show(value)}")
    return value


def _json_payload(value: object, kind: type) -> Any:
    name = "an array" if kind is list else "a table"
    accepted = (list, tuple) if kind is list else (Mapping,)
    if not isinstance(value, accepted):
        raise ValueError(f"expected {name}, got {_show(value)}")
    if _too_deep(value):
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    try:
        text = json.dumps(
            value, allow_nan=False, ensure_ascii=False, separators=(",", ":"), default=_no_json
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"must hold only JSON values: {exc}") from None
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise ValueError(f"holds text that is not valid Unicode: {bad!r}") from None
    if size > MAX_PAYLOAD:
        raise ValueError(f"too large: {size} bytes as JSON, at most {MAX_PAYLOAD} (64 KiB)")
    loaded = json.loads(text)  # a deep, plain copy: nothing shared with the caller
    return tuple(loaded) if kind is list else loaded


def _too_deep(value: object) -> bool:
    """Nesting beyond MAX_DEPTH (checked without recursion: json would hit the stack limit)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _no_json(value: object) -> Any:
    if isinstance(value, datetime | date | time):
        raise TypeError(f"{value.isoformat()!r} is a TOML date/time; write it as a string")
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _show(value: object) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for python, words in kind.items():
        if type(value) is python:
            return f"{words} ({value!r})"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


# -- the spec ---------------------------------------------------------------------


def _spec(name: str, table: Mapping[str, Any], zone: ZoneInfo, problems: _Problems) -> Spec | None:
    kinds = [key for key in KINDS if key in table]
    if not kinds:
        problems.add("", "needs one of cron, every, rrule or at")
        return None
    if len(kinds) > 1:
        problems.add(", ".join(kinds), "only one of cron, every, rrule or at may be set")
        return None
    kind = kinds[0]
    value = table[kind]
    try:
        spec: Spec
        if kind == "cron":
            spec = Cron(timing.normalize_cron(" ".join(_text(value).split())))
        elif kind == "rrule":
            if isinstance(value, str) and "DTSTART" in value.upper():  # before _text: a newline
                raise ValueError(timing.NO_DTSTART)
            rule = _text(value).strip()
            if rule.upper().startswith("RRULE:"):
                rule = rule[len("RRULE:") :]
            spec = RRule(rule)
        elif kind == "every":
            spec = Every(_duration(value, zero_ok=False))
        else:
            return Once(parse_instant(value, zone))
    except ValueError as exc:
        problems.add(kind, str(exc))
        return None
    return spec


def _anchor(
    spec: Spec | None, table: Mapping[str, Any], zone: ZoneInfo, problems: _Problems
) -> Spec | None:
    if "anchor" not in table:
        return spec
    if spec is not None and not isinstance(spec, Every):
        problems.add("anchor", "only applies to 'every' schedules")
        return spec
    try:
        anchor = parse_instant(table["anchor"], zone)
    except ValueError as exc:
        problems.add("anchor", str(exc))
        return spec
    return Every(spec.period, anchor) if isinstance(spec, Every) else spec


_Parser = Callable[[Any], Any]


@lru_cache(maxsize=64)
def _option_parsers(zone: ZoneInfo) -> Mapping[str, _Parser]:
    """The parser of each option (cached per zone: built once, not once per schedule)."""
    return {
        "task": _shared_text,
        "args": lambda v: _json_payload(v, list),
        "kwargs": lambda v: _json_payload(v, dict),
        "headers": lambda v: _json_payload(v, dict),
        "queue": _shared_text,
        "exchange": lambda v: _shared_text(v, empty=True),
        "routing_key": lambda v: _shared_text(v, empty=True),
        "format": lambda v: _choice(v, Format),
        "misfire": lambda v: _choice(v, Misfire),
        "start": lambda v: parse_instant(v, zone),
        "end": lambda v: parse_instant(v, zone),
        "jitter": lambda v: _duration(v, zero_ok=True),
        "expires": _expires,
        "grace": lambda v: _duration(v, zero_ok=False),
        "max_fires": lambda v: _integer(v, 1, None),
        "history_limit": lambda v: _integer(v, 1, None),
        "enabled": _boolean,
        "priority": lambda v: _integer(v, 0, 255),
    }


def _options(table: Mapping[str, Any], zone: ZoneInfo, problems: _Problems) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, parse in _option_parsers(zone).items():
        if key in table:
            try:
                options[key] = parse(table[key])
            except ValueError as exc:
                problems.add(key, str(exc))
    start, end = options.get("start"), options.get("end")
    if start is not None and end is not None and end <= start:
        problems.add("end", f"must be after start ({format_instant(start)})")
    return options


def schedule_from_table(
    name: str,
    table: Mapping[str, Any],
    defaults: Defaults,
    source: Source,
    *,
    stored: bool = False,
) -> Schedule:
    """Validate one schedule's table and build it; ConfigError lists every problem.

    Each problem is one line: ``schedule 'nightly': cron: ...``. Unless
    `stored` (a definition read back from the database, checked when it was
    written, perhaps by an older beatd), what cannot be stored or sent is
    refused too: names longer than their columns or an AMQP short string,
    instants out of range, headers AMQP cannot carry or beatd sets itself, a
    header frame over RabbitMQ's frame_max (publish/messages.py).
    """
    bad_name = check_name(name)
    if bad_name is not None:
        raise ConfigError(bad_name)
    problems = _Problems(name)
    if not isinstance(table, Mapping):
        problems.add("", f"expected a table of options, got {_show(table)}")
        raise ConfigError(problems.lines[0], problems=problems.lines)
    for key in table:
        if key not in _KEY_SET:
            hint = _CELERY_HINT if key in _CELERY_KEYS else did_you_mean(str(key), KEYS)
            problems.add(show_key(key), f"unknown key{hint}")

    zone = defaults.timezone
    if "timezone" in table:
        try:
            zone = parse_zone(table["timezone"])
        except ValueError as exc:
            problems.add("timezone", str(exc))
    if "task" not in table:
        problems.add("task", "is required (the Celery task name to run)")

    spec = _anchor(_spec(name, table, zone, problems), table, zone, problems)
    options = _options(table, zone, problems)
    options.setdefault("format", defaults.format)
    _check_together(spec, zone, options, problems, stored=stored)

    if problems.lines or spec is None:
        lines = problems.lines or [f"schedule {name!r}: invalid"]
        raise ConfigError(lines[0], problems=lines)
    options.setdefault("kwargs", _NO_OPTIONS)
    options.setdefault("headers", _NO_OPTIONS)
    schedule = Schedule(name=name, spec=_shared_spec(spec), timezone=zone, source=source, **options)
    too_big = None if stored else frame_problem(schedule)
    if too_big is not None:
        problems.add("headers", too_big)
        raise ConfigError(problems.lines[0], problems=problems.lines)
    return schedule


def _check_together(
    spec: Spec | None,
    zone: ZoneInfo,
    options: Mapping[str, Any],
    problems: _Problems,
    *,
    stored: bool,
) -> None:
    """The checks that need several keys at once."""
    if isinstance(spec, Cron | RRule):  # whether it fires depends on its start
        try:
            timing.check_spec(spec, zone, problems.name, options.get("start"))
        except ValueError as exc:
            problems.add(kind_of(spec), str(exc))
    if not stored:  # what a definition stored by an older beatd holds keeps loading
        for key, problem in _unstorable(spec, options):
            problems.add(key, problem)


def _unstorable(spec: Spec | None, options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """What cannot be stored or sent: (key, problem) pairs.

    Names longer than their column (and an AMQP short string), instants out
    of range, headers AMQP cannot carry or beatd sets itself.
    """
    task = options.get("task")
    if task is not None and len(task) > MAX_TASK:
        yield "task", f"must be at most {MAX_TASK} characters, got {len(task)}"
    for key in ("queue", "exchange", "routing_key"):
        size = len(options.get(key, "").encode())  # printable text holds no lone surrogate
        if size > MAX_SHORT:
            yield (
                key,
                f"must be at most {MAX_SHORT} bytes as UTF-8 (an AMQP short string), got {size}",
            )
    instants = [(key, options.get(key)) for key in ("start", "end")]
    if isinstance(spec, Once):
        instants.append(("at", spec.at))
    elif isinstance(spec, Every):
        instants.append(("anchor", spec.anchor))
    for key, instant in instants:
        if instant is not None and not MIN_YEAR < instant.year < MAX_YEAR:
            yield key, _out_of_range(instant)
    if options.get("headers"):
        yield from header_problems(options["headers"], options["format"])


_NO_OPTIONS: Mapping[str, Any] = {}
"""The kwargs and headers of every schedule that sets none: one empty dict, never mutated
(a schedule is frozen; readers copy), instead of two per schedule."""


@lru_cache(maxsize=4096)
def _shared_spec(spec: Spec) -> Spec:
    """One object per distinct spec: schedules with the same timing share it.

    Parsed specs hold only UTC instants, so equal specs are interchangeable.
    """
    return spec


# -- back to a table --------------------------------------------------------------

_MODEL_DEFAULTS = Schedule(name="-", spec=Every(timedelta(seconds=1)), task="-")


def _spec_to_table(spec: Spec) -> dict[str, Any]:
    if isinstance(spec, Cron):
        return {"cron": spec.expr}
    if isinstance(spec, RRule):
        return {"rrule": spec.rule}
    if isinstance(spec, Once):
        return {"at": format_instant(spec.at)}
    table: dict[str, Any] = {"every": format_duration(spec.period)}
    if spec.anchor != EPOCH:
        table["anchor"] = format_instant(spec.anchor)
    return table


def schedule_to_table(schedule: Schedule) -> dict[str, Any]:
    """The canonical, JSON-serialisable table of a schedule (its name and source aside).

    `timezone` and `format` are always written, so the table means the same
    whatever `[beatd]` says; other options only when they differ from the
    model's defaults.
    """
    table = _spec_to_table(schedule.spec)
    table["task"] = schedule.task
    table["timezone"] = schedule.timezone.key
    table["format"] = str(schedule.format)
    for key in OPTIONS:
        if key in table or key in ("anchor", "timezone", "format", "task"):
            continue
        value = getattr(schedule, key)
        if value == getattr(_MODEL_DEFAULTS, key):
            continue
        table[key] = _option_to_json(value)
    return table


def _option_to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Misfire | Format):
        return str(value)
    return value
