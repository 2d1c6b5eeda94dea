"""A user's first hour (issue 12): what the commands print when a person starts out.

The file is the truth in every view, no silent defaults, the README's API
snippet on a fresh database, truthful outputs, one rule for naive instants,
help that explains itself, and messages that point the way. Commands run as
real processes (`python -m beatd.cli.main`), on SQLite and PostgreSQL where a
database is involved.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from beatd.api import Beat
from beatd.cli.main import build_parser, main
from beatd.config import NO_CONFIG, load_settings
from beatd.daemon import Daemon
from beatd.errors import AlreadyExists
from beatd.publish.stdout import StdoutPublisher
from beatd.store import open_or_create

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def beatd(cwd: Path, *argv: str, process: bool = False) -> Done:
    """`beatd ARGV` run in `cwd`: in this process (quick), or as a real process."""
    if process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEATD_")}
        env["PYTHONPATH"] = str(REPO)
        done = subprocess.run(
            [sys.executable, "-m", "beatd.cli.main", *argv],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Done(done.returncode, done.stdout, done.stderr)
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(argv))
    finally:
        os.chdir(here)
    return Done(code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _no_beatd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BEATD_CONFIG", "BEATD_DATABASE", "BEATD_BROKER"):
        monkeypatch.delenv(name, raising=False)


def ok(cwd: Path, *argv: str, process: bool = False) -> Done:
    done = beatd(cwd, *argv, process=process)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def as_json(cwd: Path, *argv: str) -> Any:
    return json.loads(ok(cwd, *argv, "--json").stdout)


def listed(cwd: Path) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in as_json(cwd, "list")}


def config_file(
    where: Path, database: str, schedules: str, head: str = "", *, upgrade: bool = True
) -> Path:
    """./beatd.toml in `where`; `upgrade`: the database gets its tables (`beatd db upgrade`)."""
    path = where / "beatd.toml"
    path.write_text(f'[beatd]\ndatabase = "{database}"\n{head}\n{schedules}')
    if upgrade:
        ok(where, "db", "upgrade")
    return path


def load_as_the_daemon_does(config: Path) -> None:
    """What `beatd run` does with the file at start and on SIGHUP."""
    settings = load_settings(config)
    store = open_or_create(settings.database)
    try:
        Daemon(settings, store, StdoutPublisher(io.StringIO())).load_schedules(settings)
    finally:
        store.close()


FUTURE = (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0)
PAST = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)


# -- 1. the file is the truth in every view -----------------------------------------------

PREVIEW = '[schedules.preview-me]\ncron = "0 9 * * *"\ntask = "app.preview"\n'


def test_a_schedule_just_written_is_previewed_before_and_after_db_upgrade(
    tmp_path: Path, db_url: str
) -> None:
    """Was: after `db upgrade` list and upcoming showed none of the file (exit 1 for NAME)."""
    config_file(tmp_path, db_url, PREVIEW, upgrade=False)
    argv = ("upcoming", "--schedule", "preview-me", "--limit", "2", "--json")
    before = json.loads(ok(tmp_path, *argv, process=True).stdout)
    assert [f["schedule"] for f in before] == ["preview-me", "preview-me"]
    assert listed(tmp_path)["preview-me"]["reload_pending"] is False  # no database: file alone

    ok(tmp_path, "db", "upgrade")
    after = as_json(tmp_path, "upcoming", "--schedule", "preview-me", "--limit", "2")
    assert after == before
    row = listed(tmp_path)["preview-me"]
    assert (row["state"], row["source"], row["reload_pending"]) == ("active", "file", True)
    assert "file (reload pending)" in ok(tmp_path, "list").stdout
    with Beat.from_config(tmp_path / "beatd.toml") as beat:
        assert [f.schedule for f in beat.upcoming(limit=1)] == ["preview-me"]


def test_views_merge_the_file_as_it_is_now_with_the_database_state(
    tmp_path: Path, db_url: str
) -> None:
    """Pause and run state come from the database, definitions from the file as it is now."""
    kept = '[schedules.kept]\nevery = "1h"\ntask = "app.kept"\n'
    gone = '[schedules.gone]\nevery = "1h"\ntask = "app.gone"\n'
    config = config_file(tmp_path, db_url, PREVIEW + kept + gone)
    load_as_the_daemon_does(config)
    ok(tmp_path, "pause", "preview-me", "--note", "audit")
    ok(tmp_path, "add", "api-one", "--every", "30m", "--task", "app.api")
    rows = listed(tmp_path)
    assert {name: row["reload_pending"] for name, row in rows.items()} == {
        "api-one": False,
        "gone": False,
        "kept": False,
        "preview-me": False,
    }

    # Edited in place: a new time for preview-me, gone deleted, a new one added.
    new = '[schedules.new-one]\nevery = "2h"\ntask = "app.new"\n'
    config_file(tmp_path, db_url, PREVIEW.replace("0 9", "30 7") + kept + new)
    rows = listed(tmp_path)
    assert sorted(rows) == ["api-one", "kept", "new-one", "preview-me"]
    preview = rows["preview-me"]
    assert (preview["spec"], preview["state"], preview["note"]) == ("30 7 * * *", "paused", "audit")
    assert (preview["reload_pending"], rows["new-one"]["reload_pending"]) == (True, True)
    assert (rows["kept"]["reload_pending"], rows["api-one"]["reload_pending"]) == (False, False)
    text = {line.split()[0]: line for line in ok(tmp_path, "list").stdout.splitlines()[1:]}
    assert text["preview-me"].endswith("paused  file (reload pending)")
    assert text["kept"].endswith("active  file")
    assert as_json(tmp_path, "upcoming", "--schedule", "preview-me") == []  # still paused
    new_fires = as_json(tmp_path, "upcoming", "--schedule", "new-one", "--limit", "1")
    assert new_fires[0]["at"].endswith(":00:00Z")

    load_as_the_daemon_does(config)  # the reload: nothing is pending any more
    assert not any(row["reload_pending"] for row in listed(tmp_path).values())


# -- 2. no silent defaults ----------------------------------------------------------------


def test_without_any_config_file_a_command_exits_2_saying_so(tmp_path: Path) -> None:
    """`cd /tmp && beatd validate` printed `ok: 0 schedules`; `beatd list` an empty table."""
    for argv in (("validate",), ("list",), ("db", "upgrade")):
        done = beatd(tmp_path, *argv, process=True)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", f"beatd: {NO_CONFIG}\n")
    assert list(tmp_path.iterdir()) == []  # and no beatd.db appeared


# -- 3. the README's Python API snippet on a fresh database --------------------------------


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"Python API.*?```python\n(.*?)```", text, re.DOTALL)
    assert found, "the README has a Python API snippet"
    return found[1]


def test_the_readme_api_snippet_runs_on_a_fresh_database(tmp_path: Path, db_url: str) -> None:
    """Was: SchemaError: database has no beatd tables (the API did not create them)."""
    config_file(tmp_path, db_url, "", upgrade=False)
    snippet = readme_snippet()
    assert "Beat.from_config" in snippet
    code = f"import os\nos.chdir({str(tmp_path)!r})\n{snippet}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATD_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {row["name"] for row in as_json(tmp_path, "list")} == {"report"}


# -- 4. truthful outputs ---------------------------------------------------------------------


def test_a_one_off_added_in_the_past_is_missed_at_once_and_add_warns(
    tmp_path: Path, db_url: str
) -> None:
    """Was: `added j1: next -`, no history row and no word."""
    config_file(tmp_path, db_url, "")
    done = ok(tmp_path, "add", "j1", "--at", PAST.isoformat(), "--task", "app.j1", process=True)
    assert done.stdout == "added j1: next -\n"
    assert "warning: schedule 'j1': at:" in done.stderr and "in the past" in done.stderr
    (row,) = as_json(tmp_path, "history", "j1")
    assert (row["outcome"], row["scheduled_for"]) == (
        "dropped",
        PAST.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    assert "already past when it was stored" in row["reason"]
    assert listed(tmp_path)["j1"]["state"] == "finished"


def test_a_one_off_loaded_from_the_file_in_the_past_is_missed_at_once(
    tmp_path: Path, db_url: str
) -> None:
    once = f'[schedules.late]\nat = "{PAST.isoformat()}"\ntask = "app.late"\n'
    soon = f'[schedules.soon]\nat = "{FUTURE.isoformat()}"\ntask = "app.soon"\n'
    config = config_file(tmp_path, db_url, once + soon)
    warned = ok(tmp_path, "validate")
    assert warned.stdout == "ok: 2 schedules\n"
    assert warned.stderr.count("\n") == 1 and "schedule 'late': at:" in warned.stderr
    load_as_the_daemon_does(config)
    load_as_the_daemon_does(config)  # a reload: still one row
    (row,) = as_json(tmp_path, "history")
    assert (row["schedule"], row["outcome"]) == ("late", "dropped")
    assert "already past" in row["reason"]


def test_backfill_reports_what_happened_not_a_fixed_sentence(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Was: `4 fires recorded (sent by the leader)` when all four expired unsent."""
    config_file(tmp_path, sqlite_url, "")
    ok(tmp_path, "add", "hourly", "--every", "1h", "--task", "app.h", "--expires", "10m")
    start = PAST.replace(minute=0, second=0)
    end = start + timedelta(hours=3)
    argv = ("backfill", "hourly", "--from", start.isoformat(), "--to", end.isoformat())
    first = ok(tmp_path, *argv).stdout
    assert first == (
        "backfill hourly: 4 instants in range, 4 recorded: 4 pending (no leader is running; "
        "4 of them are past their expires: never sent)\n"
    )
    again = ok(tmp_path, *argv).stdout
    assert again == "backfill hourly: 4 instants in range, 0 recorded (4 were recorded before)\n"


def test_backfill_waits_for_the_leader_and_says_the_fires_expired(
    tmp_path: Path, sqlite_url: str
) -> None:
    config = config_file(tmp_path, sqlite_url, "", head='lease = "3s"\n')
    ok(tmp_path, "add", "hourly", "--every", "1h", "--task", "app.h", "--expires", "10m")
    settings = load_settings(config)
    store = open_or_create(settings.database)
    out = io.StringIO()
    daemon = Daemon(settings, store, StdoutPublisher(out))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        start = PAST.replace(minute=0, second=0)
        end = start + timedelta(hours=1)
        leads = threading.Event()
        while store.current() is None and not leads.wait(0.05):  # it takes the free lease
            assert thread.is_alive()
        argv = ("--from", start.isoformat(), "--to", end.isoformat())
        done = ok(tmp_path, "backfill", "hourly", *argv)
        assert done.stdout == (
            "backfill hourly: 2 instants in range, 2 recorded: "
            "2 expired unsent (past their expires)\n"
        )
    finally:
        daemon.request_stop()
        thread.join(20)
        store.close()
    assert "app.h" not in out.getvalue()


def test_the_example_config_one_off_fires_in_the_future(tmp_path: Path) -> None:
    """Its one-off was already past, so it would never have fired."""
    example = REPO / "schedules.example.toml"
    (once,) = [s for s in load_settings(example).schedules if s.kind == "at"]
    assert once.spec.at > datetime.now(UTC) + timedelta(days=365)  # type: ignore[union-attr]
    assert ok(tmp_path, "validate", "--config", str(example)).stderr == ""


# -- 5. one rule for naive instants ------------------------------------------------------------

BERLIN = '[beatd]\ntimezone = "Europe/Berlin"\n'


@pytest.fixture
def berlin(tmp_path: Path, sqlite_url: str) -> Path:
    (tmp_path / "beatd.toml").write_text(
        f'{BERLIN}database = "{sqlite_url}"\n'
        '[schedules.hourly]\nevery = "1h"\ntask = "app.hourly"\n'
    )
    return tmp_path


def test_naive_after_and_until_are_read_in_the_beatd_timezone(berlin: Path) -> None:
    """Was: read as UTC (so 2027-01-01T00:00 meant 01:00 in Berlin)."""
    fires = as_json(
        berlin, "upcoming", "--after", "2027-01-01T00:00", "--until", "2027-01-01T02:00"
    )
    assert [f["at"] for f in fires] == ["2027-01-01T00:00:00Z", "2027-01-01T01:00:00Z"]
    assert fires[0]["local"] == "2027-01-01T01:00:00+01:00"
    with Beat.from_config(berlin / "beatd.toml") as beat:
        (fire,) = beat.upcoming(limit=1, after=datetime(2027, 1, 1))  # was: ConfigError
        assert fire.at == datetime(2027, 1, 1, tzinfo=UTC)


def test_naive_backfill_range_is_read_in_the_beatd_timezone(berlin: Path) -> None:
    config = berlin / "beatd.toml"  # history kept long enough that June is not pruned away
    config.write_text(config.read_text().replace("[beatd]\n", '[beatd]\nkeep_history = "3650d"\n'))
    ok(berlin, "db", "upgrade")
    ok(berlin, "add", "api-hourly", "--every", "1h", "--task", "app.api")
    done = ok(
        berlin,
        "backfill",
        "api-hourly",
        "--from",
        "2026-06-01T00:00",
        "--to",
        "2026-06-01T01:00",
    )
    assert done.stdout.startswith("backfill api-hourly: 2 instants in range, 2 recorded")
    scheduled = sorted(row["scheduled_for"] for row in as_json(berlin, "history", "api-hourly"))
    assert scheduled == ["2026-05-31T22:00:00Z", "2026-05-31T23:00:00Z"]  # CEST is UTC+2


def test_naive_at_is_read_in_the_schedule_zone_else_the_beatd_timezone(berlin: Path) -> None:
    ok(berlin, "db", "upgrade")
    at = FUTURE.replace(month=1, day=15, hour=9, minute=0, second=0, tzinfo=None)
    ok(berlin, "add", "ny", "--at", at.isoformat(), "--timezone", "America/New_York", "--task", "t")
    ok(berlin, "add", "de", "--at", at.isoformat(), "--task", "t")
    rows = listed(berlin)
    assert rows["ny"]["next"] == at.replace(hour=14).isoformat() + "Z"  # EST is UTC-5
    assert rows["de"]["next"] == at.replace(hour=8).isoformat() + "Z"  # CET is UTC+1


# -- 6. help and version -----------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    done = ok(tmp_path, "--version", process=True)
    assert re.fullmatch(r"beatd \d+\.\d+\.\d+\S*\n", done.stdout)


def _commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser, by its full name ("add", "db current")."""

    def walk(prefix: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, Any]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    full = f"{prefix} {name}".strip()
                    yield full, sub
                    yield from walk(full, sub)

    yield from walk("", build_parser())


def test_every_option_of_every_command_is_described() -> None:
    commands = dict(_commands())
    assert {"add", "pause", "backfill", "list", "history", "db current", "upcoming"} <= set(
        commands
    )
    for name, parser in commands.items():
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name} {action.option_strings or action.dest}: no help"
        text = parser.format_help()
        for needed in ("BEATD_CONFIG", "BEATD_DATABASE", "BEATD_BROKER", "exit codes:", "  2  bad"):
            assert needed in text, f"{name} --help does not say {needed!r}"


def test_add_help_names_choices_durations_and_the_required_task() -> None:
    text = " ".join(dict(_commands())["add"].format_help().split())
    assert "--misfire {skip,coalesce,all}" in text
    assert "--format {celery,json}" in text
    assert "90s, 5m, 1h30m, 2d" in text
    usage = text.split(" add a schedule")[0]
    assert " --task TASK " in usage and "[--task" not in usage  # required
    assert "ISO-8601; without an offset it is read in the schedule's" in text


def test_add_without_task_and_with_a_bad_choice_exit_2(tmp_path: Path, sqlite_url: str) -> None:
    config_file(tmp_path, sqlite_url, "")
    no_task = beatd(tmp_path, "add", "x", "--every", "1m")
    assert no_task.returncode == 2 and "--task" in no_task.stderr
    bad = beatd(tmp_path, "add", "x", "--every", "1m", "--task", "t", "--misfire", "never")
    assert bad.returncode == 2 and "choose from 'skip', 'coalesce', 'all'" in bad.stderr


def test_db_current_is_in_the_readme_and_works(tmp_path: Path, sqlite_url: str) -> None:
    assert "beatd db current" in (REPO / "README.md").read_text()
    config_file(tmp_path, sqlite_url, "", upgrade=False)
    assert "revision (none)" in ok(tmp_path, "db", "current").stdout


# -- 7. messages that point the way -------------------------------------------------------------

MESSAGES = [
    pytest.param('[beatd]\ntimezone = "CEST"\n', "'Europe/Berlin'", id="cest-means-europe-berlin"),
    pytest.param(
        '[schedules.a]\nevery = "1h"\ntask = "t"\ntimezone = "PDT"\n',
        "'America/Los_Angeles'",
        id="pdt-means-los-angeles",
    ),
    pytest.param('[beatd]\ntimezone = "berlin"\n', "did you mean 'Europe/Berlin'", id="city-alone"),
    pytest.param(
        '[beatd]\ndatabase = "postgres://u@h/db"\n', "write postgresql://", id="postgres-scheme"
    ),
]


@pytest.mark.parametrize(("toml", "says"), MESSAGES)
def test_messages_point_the_way(tmp_path: Path, toml: str, says: str) -> None:
    (tmp_path / "beatd.toml").write_text(toml)
    done = beatd(tmp_path, "validate")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr


@pytest.mark.skipif(find_spec("psycopg2") is not None, reason="psycopg2 is installed here")
def test_a_database_driver_that_is_not_installed_is_refused_at_validate(tmp_path: Path) -> None:
    """Was: validate passed, then `beatd run` failed with No module named 'psycopg2'."""
    (tmp_path / "beatd.toml").write_text('[beatd]\ndatabase = "postgresql+psycopg2://u@h/db"\n')
    done = beatd(tmp_path, "validate", process=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "'psycopg2'" in done.stderr and "not installed" in done.stderr
    assert "postgresql://" in done.stderr


def test_a_duplicate_name_says_how_to_replace_it(tmp_path: Path, sqlite_url: str) -> None:
    config_file(tmp_path, sqlite_url, "")
    ok(tmp_path, "add", "ping", "--every", "30s", "--task", "t")
    done = beatd(tmp_path, "add", "ping", "--every", "1m", "--task", "t")
    assert (done.returncode, done.stderr) == (
        2,
        "beatd: schedule 'ping' already exists; add --replace to change it\n",
    )
    with Beat(database_url=sqlite_url) as beat, pytest.raises(AlreadyExists) as caught:
        beat.add("ping", every="1m", task="t")
    assert "pass replace=True to change it" in str(caught.value)


def test_jitter_longer_than_the_period_warns(tmp_path: Path, sqlite_url: str) -> None:
    config_file(
        tmp_path,
        sqlite_url,
        '[schedules.a]\nevery = "1m"\njitter = "5m"\ntask = "t"\n'
        '[schedules.b]\ncron = "*/10 * * * *"\njitter = "15m"\ntask = "t"\n'
        '[schedules.c]\nevery = "1h"\njitter = "5m"\ntask = "t"\n',
    )
    done = ok(tmp_path, "validate")
    lines = done.stderr.splitlines()
    assert [line.split(":")[2].strip() for line in lines] == ["schedule 'a'", "schedule 'b'"]
    assert "jitter: 5m is longer than the time between its fires (1m)" in lines[0]
    assert "(10m)" in lines[1]
    added = ok(tmp_path, "add", "d", "--every", "10s", "--jitter", "1m", "--task", "t")
    assert "schedule 'd': jitter: 1m is longer" in added.stderr
