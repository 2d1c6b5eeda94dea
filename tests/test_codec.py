"""One schedule's table <-> Schedule: every bad input is one line naming schedule and key."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beatd.codec import (
    Defaults,
    check_name,
    format_instant,
    localize,
    parse_instant,
    schedule_from_table,
    schedule_to_table,
)
from beatd.errors import ConfigError
from beatd.model import EPOCH, Cron, Every, Format, Misfire, Once, RRule, Schedule, Source
from beatd.publish.messages import BEATD_HEADERS

BERLIN = ZoneInfo("Europe/Berlin")
DEFAULTS = Defaults()


def build(table: dict[str, Any], name: str = "job", defaults: Defaults = DEFAULTS) -> Schedule:
    return schedule_from_table(name, table, defaults, Source.FILE)


def problems_of(table: dict[str, Any], name: str = "job") -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        build(table, name)
    for line in caught.value.problems:
        assert "\n" not in line
    return caught.value.problems


TASK = {"task": "app.tasks.ping"}

BAD = [
    ("missing-task", {"every": "5m"}, ["schedule 'job': task: is required"]),
    ("no-kind", dict(TASK), ["schedule 'job': needs one of cron, every, rrule or at"]),
    (
        "two-kinds",
        {**TASK, "cron": "* * * * *", "every": "5m"},
        ["schedule 'job': cron, every: only one of"],
    ),
    (
        "unknown-key",
        {**TASK, "every": "5m", "quue": "x"},
        ["quue: unknown key (did you mean 'queue'?)"],
    ),
    ("unknown-key-no-hint", {**TASK, "every": "5m", "zzzzzz": 1}, ["zzzzzz: unknown key"]),
    ("cron-garbage", {**TASK, "cron": "not a cron"}, ["schedule 'job': cron: "]),
    ("cron-minute-61", {**TASK, "cron": "61 * * * *"}, ["schedule 'job': cron: "]),
    ("cron-feb-31-never-fires", {**TASK, "cron": "0 0 31 2 *"}, ["schedule 'job': cron: "]),
    ("cron-not-string", {**TASK, "cron": 5}, ["cron: expected a string, got an integer (5)"]),
    ("cron-empty", {**TASK, "cron": "  "}, ["cron: must not be empty"]),
    ("rrule-garbage", {**TASK, "rrule": "FREQ=SOMETIMES"}, ["schedule 'job': rrule: "]),
    (
        "rrule-dtstart-points-at-start",  # was "must not contain control characters"
        {**TASK, "rrule": "DTSTART:20260101T090000\nRRULE:FREQ=DAILY"},
        ["schedule 'job': rrule: an rrule must not contain DTSTART: set the schedule's start"],
    ),
    (
        "rrule-judged-from-its-start",  # passed validate, then upcoming() raised ValueError
        {**TASK, "rrule": "FREQ=HOURLY;BYHOUR=0;INTERVAL=3", "start": "2026-01-01T01:15:20Z"},
        ["rrule: rrule 'FREQ=HOURLY;BYHOUR=0;INTERVAL=3' never fires from its start 2026-01-01"],
    ),
    (
        "rrule-less-than-once-a-century",  # was accepted and never fired
        {**TASK, "rrule": "FREQ=YEARLY;INTERVAL=9000"},
        ["schedule 'job': rrule: rrule 'FREQ=YEARLY;INTERVAL=9000' fires less often than once"],
    ),
    ("at-garbage", {**TASK, "at": "tomorrow"}, ["at: expected an ISO-8601 date and time"]),
    ("at-date-only", {**TASK, "at": "2026-12-01"}, ["at: expected a date and a time"]),
    ("at-toml-date", {**TASK, "at": date(2026, 12, 1)}, ["at: expected a date and a time"]),
    (
        "unknown-zone",
        {**TASK, "every": "5m", "timezone": "Europe/Berln"},
        ["timezone: unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)"],
    ),
    ("zone-not-string", {**TASK, "every": "5m", "timezone": 1}, ["timezone: expected an IANA"]),
    ("every-zero", {**TASK, "every": "0s"}, ["every: must be more than 0s"]),
    ("every-zero-int", {**TASK, "every": 0}, ["every: must be more than 0s"]),
    ("every-negative", {**TASK, "every": -5}, ["every: must be more than 0s"]),
    ("every-negative-text", {**TASK, "every": "-5m"}, ["every: expected a duration"]),
    ("every-garbage", {**TASK, "every": "soon"}, ["every: expected a duration"]),
    ("every-fraction", {**TASK, "every": 1.5}, ["every: durations are whole seconds"]),
    ("every-bool", {**TASK, "every": True}, ["every: expected a duration"]),
    ("jitter-negative", {**TASK, "every": "5m", "jitter": -1}, ["jitter: must be 0s or more"]),
    ("jitter-garbage", {**TASK, "every": "5m", "jitter": "abit"}, ["jitter: expected a duration"]),
    ("expires-zero", {**TASK, "every": "5m", "expires": "0s"}, ["expires: must be more than 0s"]),
    ("grace-zero", {**TASK, "every": "5m", "grace": 0}, ["grace: must be more than 0s"]),
    (
        "misfire-typo",
        {**TASK, "every": "5m", "misfire": "coalese"},
        ["misfire: expected one of skip, coalesce, all, got 'coalese' (did you mean 'coalesce'?)"],
    ),
    (
        "format-bad",
        {**TASK, "every": "5m", "format": "xml"},
        ["format: expected one of celery, json"],
    ),
    (
        "end-before-start",
        {**TASK, "every": "5m", "start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        ["end: must be after start (2026-02-01T00:00:00Z)"],
    ),
    (
        "end-equals-start",
        {
            **TASK,
            "every": "5m",
            "start": "2026-02-01T00:00:00Z",
            "end": "2026-02-01T01:00:00+01:00",
        },
        ["end: must be after start"],
    ),
    ("start-garbage", {**TASK, "every": "5m", "start": "yesterday"}, ["start: expected an ISO"]),
    (
        "anchor-with-cron",
        {**TASK, "cron": "* * * * *", "anchor": "2026-01-01T00:00:00Z"},
        ["anchor: only applies to 'every' schedules"],
    ),
    ("anchor-garbage", {**TASK, "every": "5m", "anchor": 3}, ["anchor: expected an ISO"]),
    ("max-fires-zero", {**TASK, "every": "5m", "max_fires": 0}, ["max_fires: must be 1 or more"]),
    (
        "max-fires-text",
        {**TASK, "every": "5m", "max_fires": "3"},
        ["max_fires: expected an integer"],
    ),
    (
        "max-fires-bool",
        {**TASK, "every": "5m", "max_fires": True},
        ["max_fires: expected an integer"],
    ),
    (
        "priority-high",
        {**TASK, "every": "5m", "priority": 256},
        ["priority: must be from 0 to 255"],
    ),
    (
        "priority-negative",
        {**TASK, "every": "5m", "priority": -1},
        ["priority: must be from 0 to 255"],
    ),
    (
        "enabled-text",
        {**TASK, "every": "5m", "enabled": "yes"},
        ["enabled: expected true or false"],
    ),
    ("task-empty", {"task": "", "every": "5m"}, ["task: must not be empty"]),
    ("task-number", {"task": 5, "every": "5m"}, ["task: expected a string"]),
    ("queue-empty", {**TASK, "every": "5m", "queue": ""}, ["queue: must not be empty"]),
    ("args-not-array", {**TASK, "every": "5m", "args": "1,2"}, ["args: expected an array"]),
    ("kwargs-not-table", {**TASK, "every": "5m", "kwargs": [1]}, ["kwargs: expected a table"]),
    ("headers-not-table", {**TASK, "every": "5m", "headers": 1}, ["headers: expected a table"]),
    (
        "args-too-large",
        {**TASK, "every": "5m", "args": ["x" * 70_000]},
        ["args: too large: 70004 bytes as JSON, at most 65536 (64 KiB)"],
    ),
    (
        "kwargs-toml-datetime",
        {**TASK, "every": "5m", "kwargs": {"when": datetime(2026, 1, 1)}},
        ["kwargs: must hold only JSON values: '2026-01-01T00:00:00' is a TOML date/time"],
    ),
    ("args-nan", {**TASK, "every": "5m", "args": [float("nan")]}, ["args: must hold only JSON"]),
    (
        "all-problems-at-once",
        {"cron": "* * * * *", "every": "0s", "timezone": "Mars/Base", "jitter": "x", "quue": 1},
        [
            "quue: unknown key",
            "timezone: unknown time zone 'Mars/Base'",
            "task: is required",
            "cron, every: only one of",
            "jitter: expected a duration",
        ],
    ),
]


@pytest.mark.parametrize(("table", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_table_gives_one_line_per_problem(table: dict[str, Any], expected: list[str]) -> None:
    problems = problems_of(table)
    assert len(problems) == len(expected), problems
    for line, fragment in zip(problems, expected, strict=True):
        assert line.startswith("schedule 'job': ")
        assert fragment in line


BAD_NAMES = [
    ("empty", ""),
    ("too-long", "x" * 201),
    ("newline", "a\nb"),
    ("tab", "a\tb"),
    ("escape", "a\x1bb"),
    ("leading-space", " a"),
]


@pytest.mark.parametrize("name", [n for _, n in BAD_NAMES], ids=[i for i, _ in BAD_NAMES])
def test_bad_names_are_refused(name: str) -> None:
    assert check_name(name) is not None
    with pytest.raises(ConfigError) as caught:
        build({**TASK, "every": "5m"}, name=name)
    assert len(caught.value.problems) == 1
    assert "\n" not in caught.value.problems[0]


@pytest.mark.parametrize("name", ["a", "nightly-report", "x" * 200, "Bericht über Nacht", "a b"])
def test_good_names_are_accepted(name: str) -> None:
    assert build({**TASK, "every": "5m"}, name=name).name == name


def test_table_that_is_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"schedule 'job': expected a table of options"):
        schedule_from_table("job", "5m", DEFAULTS, Source.FILE)  # type: ignore[arg-type]


# -- good input -------------------------------------------------------------------------

GOOD = [
    ("every", {**TASK, "every": "1h30m"}, Every(timedelta(minutes=90))),
    ("every-seconds-int", {**TASK, "every": 90}, Every(timedelta(seconds=90))),
    ("every-seconds-text", {**TASK, "every": "90"}, Every(timedelta(seconds=90))),
    (
        "every-anchor",
        {**TASK, "every": "1d", "anchor": "2026-01-01T06:00:00Z"},
        Every(timedelta(days=1), datetime(2026, 1, 1, 6, tzinfo=UTC)),
    ),
    ("cron", {**TASK, "cron": "*/5 9-17 * * MON-FRI"}, Cron("*/5 9-17 * * MON-FRI")),
    ("cron-extra-spaces", {**TASK, "cron": " */5   9-17 * * * "}, Cron("*/5 9-17 * * *")),
    ("cron-six-fields", {**TASK, "cron": "*/10 * * * * *"}, Cron("*/10 * * * * *")),
    ("cron-macro", {**TASK, "cron": "@daily"}, Cron("0 0 * * *")),
    (
        "rrule",
        {**TASK, "rrule": "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18"},
        RRule("FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18"),
    ),
    ("rrule-prefix", {**TASK, "rrule": "RRULE:FREQ=DAILY"}, RRule("FREQ=DAILY")),
    (
        "rrule-valid-from-its-start",  # was refused: judged from 1970-01-01 00:00
        {**TASK, "rrule": "FREQ=HOURLY;BYHOUR=10,20;INTERVAL=3", "start": "2026-01-01T01:15:20Z"},
        RRule("FREQ=HOURLY;BYHOUR=10,20;INTERVAL=3"),
    ),
    (
        "rrule-count-until",  # COUNT and UNTIL were refused
        {**TASK, "rrule": "FREQ=WEEKLY;BYDAY=MO;UNTIL=20271231T170000Z"},
        RRule("FREQ=WEEKLY;BYDAY=MO;UNTIL=20271231T170000Z"),
    ),
    (
        "at-offset",
        {**TASK, "at": "2026-12-01T09:00:00+01:00"},
        Once(datetime(2026, 12, 1, 8, tzinfo=UTC)),
    ),
    ("at-z", {**TASK, "at": "2026-12-01T09:00:00Z"}, Once(datetime(2026, 12, 1, 9, tzinfo=UTC))),
    (
        "at-naive-in-zone",
        {**TASK, "at": "2026-12-01T09:00:00", "timezone": "Europe/Berlin"},
        Once(datetime(2026, 12, 1, 8, tzinfo=UTC)),
    ),
    (
        "at-toml-local-datetime",
        {**TASK, "at": datetime(2026, 7, 1, 9), "timezone": "Europe/Berlin"},
        Once(datetime(2026, 7, 1, 7, tzinfo=UTC)),
    ),
    (
        "at-toml-offset-datetime",
        {**TASK, "at": datetime(2026, 7, 1, 9, tzinfo=BERLIN)},
        Once(datetime(2026, 7, 1, 7, tzinfo=UTC)),
    ),
]


@pytest.mark.parametrize(("table", "spec"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_good_specs(table: dict[str, Any], spec: object) -> None:
    assert build(table).spec == spec


def test_every_option_is_parsed() -> None:
    schedule = build(
        {
            "every": "5m",
            "task": "app.tasks.report",
            "args": [1, "two", [3]],
            "kwargs": {"full": True},
            "queue": "reports",
            "exchange": "jobs",
            "routing_key": "reports.nightly",
            "headers": {"x-team": "data"},
            "format": "json",
            "timezone": "Europe/Berlin",
            "start": "2026-01-01T00:00:00",
            "end": "2027-01-01T00:00:00Z",
            "jitter": "30s",
            "expires": "1h",
            "grace": "10m",
            "misfire": "all",
            "max_fires": 10,
            "enabled": False,
            "priority": 5,
        }
    )
    assert schedule == Schedule(
        name="job",
        spec=Every(timedelta(minutes=5)),
        task="app.tasks.report",
        timezone=BERLIN,
        args=(1, "two", [3]),
        kwargs={"full": True},
        queue="reports",
        exchange="jobs",
        routing_key="reports.nightly",
        headers={"x-team": "data"},
        format=Format.JSON,
        start=datetime(2025, 12, 31, 23, tzinfo=UTC),
        end=datetime(2027, 1, 1, tzinfo=UTC),
        jitter=timedelta(seconds=30),
        expires=timedelta(hours=1),
        grace=timedelta(minutes=10),
        misfire=Misfire.ALL,
        max_fires=10,
        enabled=False,
        priority=5,
        source=Source.FILE,
    )


def test_defaults_give_zone_and_format() -> None:
    defaults = Defaults(timezone=BERLIN, format=Format.JSON)
    schedule = build({**TASK, "at": "2026-12-01T09:00:00"}, defaults=defaults)
    assert schedule.timezone == BERLIN
    assert schedule.format == Format.JSON
    assert schedule.spec == Once(datetime(2026, 12, 1, 8, tzinfo=UTC))
    own = build({**TASK, "every": "5m", "timezone": "UTC", "format": "celery"}, defaults=defaults)
    assert (own.timezone.key, own.format) == ("UTC", Format.CELERY)


def test_payload_is_copied_not_shared() -> None:
    kwargs: dict[str, Any] = {"a": {"b": [1]}}
    schedule = build({**TASK, "every": "5m", "kwargs": kwargs})
    kwargs["a"]["b"].append(2)
    assert schedule.kwargs == {"a": {"b": [1]}}


def test_api_python_values_are_accepted() -> None:
    schedule = schedule_from_table(
        "job",
        {
            **TASK,
            "every": 300,
            "timezone": BERLIN,
            "args": (1, 2),
            "start": datetime(2026, 1, 1, tzinfo=UTC),
        },
        DEFAULTS,
        Source.API,
    )
    assert schedule.spec == Every(timedelta(minutes=5))
    assert schedule.args == (1, 2)
    assert schedule.source == Source.API


# -- wall times and DST --------------------------------------------------------------

LOCAL = [
    ("winter", datetime(2026, 1, 15, 9), datetime(2026, 1, 15, 8, tzinfo=UTC)),
    ("summer", datetime(2026, 7, 15, 9), datetime(2026, 7, 15, 7, tzinfo=UTC)),
    ("gap-moves-after-gap", datetime(2026, 3, 29, 2, 30), datetime(2026, 3, 29, 1, tzinfo=UTC)),
    ("gap-start", datetime(2026, 3, 29, 2, 0), datetime(2026, 3, 29, 1, tzinfo=UTC)),
    (
        "just-before-gap",
        datetime(2026, 3, 29, 1, 59, 59),
        datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC),
    ),
    (
        "fold-first-occurrence",
        datetime(2026, 10, 25, 2, 30),
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
    ),
]


@pytest.mark.parametrize(("wall", "instant"), [c[1:] for c in LOCAL], ids=[c[0] for c in LOCAL])
def test_localize_follows_the_dst_rule(wall: datetime, instant: datetime) -> None:
    assert localize(wall, BERLIN) == instant


def test_parse_instant_forms() -> None:
    assert parse_instant("2026-12-01T09:00:00Z", BERLIN) == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert parse_instant("2026-12-01 09:00", BERLIN) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected a date and a time"):
        parse_instant(time(9), BERLIN)


def test_format_instant() -> None:
    assert format_instant(datetime(2026, 12, 1, 9, tzinfo=BERLIN)) == "2026-12-01T08:00:00Z"
    assert (
        format_instant(datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC))
        == "2026-01-01T00:00:00.000005Z"
    )


# -- back to a table -----------------------------------------------------------------


def test_to_table_writes_only_what_differs() -> None:
    schedule = build({**TASK, "every": "90s"})
    assert schedule_to_table(schedule) == {
        "every": "1m30s",
        "task": "app.tasks.ping",
        "timezone": "UTC",
        "format": "celery",
    }


def test_to_table_is_independent_of_defaults() -> None:
    schedule = build({**TASK, "every": "90s"})
    other = Defaults(timezone=BERLIN, format=Format.JSON)
    assert schedule_from_table("job", schedule_to_table(schedule), other, Source.FILE) == schedule


names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs", "Cf", "Co", "Cn")),
    min_size=1,
    max_size=30,
)
instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
seconds = st.integers(min_value=1, max_value=10 * 365 * 86400).map(lambda s: timedelta(seconds=s))
json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
specs = st.one_of(
    st.builds(Every, seconds, st.just(EPOCH) | instants),
    st.builds(Once, instants),
    st.sampled_from([Cron("*/5 9-17 * * MON-FRI"), Cron("0 0 * * *"), Cron("30 2 1 * *")]),
    st.sampled_from([RRule("FREQ=DAILY;BYHOUR=9"), RRule("FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18")]),
)
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]).map(ZoneInfo)
text = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20)
header_names = text.filter(lambda key: key not in BEATD_HEADERS[Format.CELERY])


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    start = draw(st.none() | instants)
    end = draw(st.none() | instants)
    if start is not None and end is not None and end <= start:
        end = start + timedelta(seconds=1)
    return Schedule(
        name=draw(names.filter(lambda n: n == n.strip())),
        spec=draw(specs),
        task=draw(text),
        timezone=draw(zones),
        args=tuple(draw(st.lists(json_value, max_size=3))),
        kwargs=draw(st.dictionaries(st.text(max_size=5), json_value, max_size=3)),
        queue=draw(st.just("celery") | text),
        exchange=draw(st.just("") | text),
        routing_key=draw(st.none() | st.just("") | text),
        headers=draw(st.dictionaries(header_names, json_value, max_size=2)),
        format=draw(st.sampled_from(list(Format))),
        start=start,
        end=end,
        jitter=draw(st.just(timedelta(0)) | seconds),
        expires=draw(st.none() | seconds),
        misfire=draw(st.sampled_from(list(Misfire))),
        grace=draw(st.none() | seconds),
        max_fires=draw(st.none() | st.integers(1, 10**6)),
        enabled=draw(st.booleans()),
        priority=draw(st.none() | st.integers(0, 255)),
        source=draw(st.sampled_from(list(Source))),
    )


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_round_trip(schedule: Schedule) -> None:
    import json

    table = schedule_to_table(schedule)
    assert json.loads(json.dumps(table)) == table  # JSON-serialisable as it is
    assert schedule_from_table(schedule.name, table, Defaults(), schedule.source) == schedule


KEYS_UNDER_FUZZ = ("cron", "every", "rrule", "at", "timezone", "start", "jitter", "priority")
cron_words = st.sampled_from(
    [
        "*",
        "*/5",
        "0",
        "59",
        "60",
        "1-5",
        "5-1",
        "MON",
        "L",
        "5L",
        "W",
        "15W",
        "1#2",
        "H",
        "H/7",
        "?",
        "JAN",
        ",",
        "-",
        "/",
        "@daily",
        "@never",
        "R",
        "0/0",
        "2-31/2",
        "LW",
        "#",
    ]
)
garbage = st.one_of(
    st.text(max_size=30),
    st.lists(cron_words, min_size=1, max_size=8).map(" ".join),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(KEYS_UNDER_FUZZ)), garbage)
def test_any_value_gives_a_schedule_or_config_error(key: str, value: object) -> None:
    """Whatever a user writes, the codec answers with a Schedule or ConfigError lines."""
    table: dict[str, Any] = {"task": "t", key: value}
    if key not in ("cron", "every", "rrule", "at"):
        table["every"] = "5m"
    try:
        build(table)
    except ConfigError as exc:
        assert exc.problems
        assert all(
            line.startswith("schedule 'job': ") and "\n" not in line for line in exc.problems
        )
