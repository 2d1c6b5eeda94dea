"""What every importer shares: calendars -> cron or rrule with the sources' AND meaning,
Celery's field syntax, the TOML writer, names, the cutover, and the command's usage."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from import_support import run_import

from beatd import timing
from beatd.cli.main import main
from beatd.codec import Defaults, schedule_from_table
from beatd.importers import Batch, Entry, Imported, NextFire, dst_differences, finish, toml_out
from beatd.importers.calendar import (
    DAYS,
    HOURS,
    MINUTES,
    MONTHS,
    WEEKDAYS,
    Calendar,
    parse_celery_field,
    to_spec,
)
from beatd.model import Source

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def cal(**fields: object) -> Calendar:
    values = {"minutes": {0}, "hours": {9}, **fields}
    return Calendar(**{k: frozenset(v) for k, v in values.items()})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("calendar", "expected"),
    [
        pytest.param(cal(), ("cron", "0 9 * * *"), id="daily"),
        pytest.param(
            cal(minutes=range(0, 60, 15), hours=range(8, 19), weekdays=range(1, 6)),
            ("cron", "*/15 8-18 * * 1-5"),
            id="office-steps-ranges",
        ),
        pytest.param(cal(months={1, 4, 7, 10}, days={1}), ("cron", "0 9 1 */3 *"), id="quarterly"),
        pytest.param(cal(weekdays={0, 6}), ("cron", "0 9 * * 0,6"), id="two-days-not-a-step"),
        pytest.param(cal(seconds={30}), ("cron", "30 0 9 * * *"), id="seconds-six-fields"),
        pytest.param(
            cal(days=range(1, 8), weekdays={1}),
            (
                "rrule",
                "FREQ=DAILY;BYMONTHDAY=1,2,3,4,5,6,7;BYDAY=MO;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
            ),
            id="dom-and-dow-fixed",
        ),
        pytest.param(
            cal(minutes={0, 30}, hours=HOURS, days={13}, weekdays={5}),
            ("rrule", "FREQ=HOURLY;BYMONTHDAY=13;BYDAY=FR;BYMINUTE=0,30;BYSECOND=0"),
            id="dom-and-dow-frequent",
        ),
        pytest.param(
            cal(days={-1}, hours={17}),
            ("rrule", "FREQ=DAILY;BYMONTHDAY=-1;BYHOUR=17;BYMINUTE=0;BYSECOND=0"),
            id="last-day",
        ),
        pytest.param(
            cal(days=set(), nth={(-1, 5)}, hours={17}),
            ("rrule", "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17;BYMINUTE=0;BYSECOND=0"),
            id="last-friday",
        ),
    ],
)
def test_calendar_to_spec(calendar: Calendar, expected: tuple[str, str]) -> None:
    assert to_spec(calendar) == expected


@pytest.mark.parametrize(
    "calendar",
    [
        cal(days=range(1, 8), weekdays={1}),  # the first Monday, as Celery means it
        cal(days={13}, weekdays={5}, minutes={0, 30}, hours=HOURS),
        cal(days=range(10, 20), weekdays={0, 6}, months={2, 3}),
        cal(days=range(1, 32, 2), weekdays=range(1, 6), hours={0, 12}),
        cal(weekdays={3}, hours=range(9, 18, 2), minutes={5, 35}),
    ],
)
def test_converted_calendar_fires_exactly_where_every_field_matches(calendar: Calendar) -> None:
    """The oracle is the sources' meaning, checked minute by minute over 120 days (UTC)."""
    kind, spec = to_spec(calendar)
    schedule = schedule_from_table("s", {kind: spec, "task": "t"}, Defaults(), Source.API)
    start = datetime(2027, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=120)
    ours = list(timing.fires_between(schedule, start - timedelta(seconds=1), end))
    expected = []
    at = start
    while at <= end:
        cron_weekday = (at.weekday() + 1) % 7
        if (
            at.minute in calendar.minutes
            and at.hour in calendar.hours
            and at.day in calendar.days
            and at.month in calendar.months
            and cron_weekday in calendar.weekdays
        ):
            expected.append(at)
        at += timedelta(minutes=1)
    assert ours == expected


@pytest.mark.parametrize(
    ("text", "domain", "values"),
    [
        ("*", MINUTES, set(MINUTES)),
        ("*/15", MINUTES, {0, 15, 30, 45}),
        ("0,30", MINUTES, {0, 30}),
        ("22-2", HOURS, {22, 23, 0, 1, 2}),  # Celery wraps a reversed range
        ("8-18/5", HOURS, {8, 13, 18}),
        ("mon-fri", WEEKDAYS, {1, 2, 3, 4, 5}),
        ("sunday,Saturday", WEEKDAYS, {0, 6}),
        ("jan,apr", MONTHS, {1, 4}),
        ("1-12/3", MONTHS, {1, 4, 7, 10}),
        ("1-7", DAYS, set(range(1, 8))),
    ],
)
def test_celery_field(text: str, domain: range, values: set[int]) -> None:
    assert parse_celery_field(text, domain) == values


@pytest.mark.parametrize(
    ("text", "domain"),
    [("7", WEEKDAYS), ("1,,2", MINUTES), ("5/15", MINUTES), ("noon", HOURS), ("0", DAYS)],
)
def test_celery_field_refused_as_celery_refuses_it(text: str, domain: range) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("[", r"\[")):
        parse_celery_field(text, domain)


# -- the TOML writer ------------------------------------------------------------------


def imported(name: str, table: dict[str, object]) -> Imported:
    entry = Entry(name, table, "test source\nsecond line")
    return Imported(entry, schedule_from_table(name, table, Defaults(), Source.API))


def test_toml_round_trips_awkward_values() -> None:
    kwargs = {
        "quote": 'say "hi"\\now',
        "control": "tab\tnew\nline\x7fdel\x01",
        "unicode": "Grüße ✓",
        "nested": {"a b": [1, 2.5, True, {"x.y": "z"}]},
        "": "empty key",
    }
    item = imported("weird name.with dots", {"every": "5m", "task": "t", "kwargs": kwargs})
    text = toml_out.document("header\nline two", [toml_out.table(item)])
    parsed = tomllib.loads(text)
    assert parsed["schedules"]["weird name.with dots"]["kwargs"] == kwargs
    assert "# from test source\n# second line" in text


def test_toml_refuses_null() -> None:
    item = imported("n", {"every": "5m", "task": "t", "args": [None]})
    with pytest.raises(ValueError, match="args: holds null"):
        toml_out.table(item)


# -- finish: names, cutover -----------------------------------------------------------


def test_names_made_valid_unique_and_said() -> None:
    table = {"every": "5m", "task": "t"}
    batch = Batch("test", [Entry(n, table, "o") for n in ("ok", " ok ", "ok\n", "x" * 300)])
    done, skipped = finish(batch, NOW)
    assert not skipped
    assert [i.entry.name for i in done] == ["ok", "ok-2", "ok_", "x" * 200]
    assert "imported as 'ok-2'" in done[1].entry.notes[0]
    assert not done[0].entry.notes


def test_nothing_from_the_past_fires() -> None:
    past = Entry("gone", {"at": "2026-01-01T00:00:00Z", "task": "t"}, "o")
    future = Entry("later", {"at": "2027-01-01T00:00:00Z", "task": "t"}, "o")
    done, skipped = finish(Batch("test", [past, future]), NOW)
    assert [i.entry.name for i in done] == ["later"]
    assert skipped[0].name == "gone" and "has passed" in skipped[0].reason


def test_invalid_table_is_skipped_with_the_codec_reason() -> None:
    done, skipped = finish(
        Batch("t", [Entry("bad", {"cron": "61 * * * *", "task": "t"}, "o")]), NOW
    )
    assert not done and "cron" in skipped[0].reason


# -- the command ------------------------------------------------------------------------


def test_celery_style_key_in_beatd_toml_hints_at_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "beatd.toml"
    path.write_text('[schedules.report]\ntask = "r"\nschedule = 300\noptions = { queue = "q" }\n')
    assert main(["--config", str(path), "validate"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3  # one per problem: no timing key, schedule, options
    for key in ("schedule", "options"):
        line = next(line for line in lines if f"'report': {key}: unknown key" in line)
        assert "beatd import celery MODULE:APP" in line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["celery", "m:app", "--replace"], "--replace only applies with --to-database"),
        (["celery", "m:app", "--out", "f", "--to-database"], "not allowed with argument"),
        (["apscheduler"], "DATABASE_URL"),
        (["django-celery-beat", "not a url"], "DATABASE_URL"),
        ([], "SOURCE"),
    ],
)
def test_bad_usage_is_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_import(capsys, *argv)
    assert run.code == 2 and says in run.err and "Traceback" not in run.err


def test_missing_sqlite_file_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nope.db"
    run = run_import(capsys, "django-celery-beat", f"sqlite:///{path}")
    assert run.code == 2 and "no such database file" in run.err
    assert not path.exists()


# -- DST notes ------------------------------------------------------------------------

BERLIN_DAILY = schedule_from_table(
    "daily",
    {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "task": "t"},
    Defaults(),
    Source.API,
)


def source_without(*dropped: datetime) -> NextFire:
    """beatd's own fires, less some: a stand-in for a source that differs there."""

    def next_fire(after: datetime) -> datetime | None:
        at = timing.next_after(BERLIN_DAILY, after)
        while at in dropped:
            at = timing.next_after(BERLIN_DAILY, at)  # type: ignore[arg-type]
        return at

    return next_fire


def test_no_note_when_the_source_agrees() -> None:
    assert dst_differences(BERLIN_DAILY, source_without(), NOW) == []


def test_note_names_the_change_and_both_sides() -> None:
    gap_fire = datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 02:30 does not exist: 03:00 CEST
    notes = dst_differences(BERLIN_DAILY, source_without(gap_fire), NOW)
    assert notes == [
        "DST change of 2027-03-28 in Europe/Berlin: the source fires nothing "
        "where beatd fires 2027-03-28 03:00:00+02:00 (beatd's DST rule)"
    ]


def test_a_change_just_past_is_still_compared() -> None:
    day_after = datetime(2027, 3, 29, 0, 30, tzinfo=UTC)  # 02:30 CEST the next day
    now = datetime(2027, 3, 28, 5, 0, tzinfo=UTC)  # four hours after the change
    notes = dst_differences(BERLIN_DAILY, source_without(day_after), now)
    assert len(notes) == 1 and notes[0].startswith("DST change of 2027-03-28")
