"""`beatd import django-celery-beat`: tables created by Django's own migrations and rows
created with django-celery-beat's models (SQLite and PostgreSQL, in a subprocess: Django
is global state; Django and Celery live in the import venv), converted (without Django:
the mapping tests run where neither imports), then every task's fires over a year compared
with what django-celery-beat's own schedule objects compute (dcb_source.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from import_support import (
    HERE,
    YEAR,
    at_dst_changes,
    differences,
    run_import,
    run_in,
    settings_of,
)

from beatd.api import Beat
from beatd.cli.main import main
from beatd.model import Every

# Where Celery 5.7's crontab (django-celery-beat's TzAwareCrontab) differs from SPEC §3.
EXPECTED_DST = {
    ("nightly-report", "spring"),  # Celery 03:30 for the skipped 02:30; beatd 03:00
    ("night-shift", "spring"),  # frequent: Celery adds 03:00, beatd skips the gap
    ("night-shift", "fall"),  # frequent: Celery skips the repeated 02:00 and 02:30
}
SKIPPED = {"dawn": "solar", "launched": "has passed", "broken-args": "not JSON"}


def django(python: str, *argv: str) -> str:
    done = subprocess.run(
        [python, str(HERE / "dcb_source.py"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dcb_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One django-celery-beat database per backend for the module (the tests only read it),
    made by Django in the import venv."""
    python = request.getfixturevalue("import_python")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('dcb')}/django.db"
        django(python, "make", url)
        yield url
        return
    server = request.getfixturevalue("pg_server")
    with request.getfixturevalue("pg_database")(server) as url:
        django(python, "make", url)
        yield url


@pytest.fixture
def no_django(monkeypatch: pytest.MonkeyPatch) -> None:
    """The import reads the tables without Django (nor Celery): neither can be imported."""
    for module in ("django", "django_celery_beat", "celery"):
        monkeypatch.setitem(sys.modules, module, None)


def test_every_fire_matches_django_celery_beat_or_is_a_named_dst_difference(
    dcb_url: str, import_python: str
) -> None:
    run = run_in(import_python, "django-celery-beat", dcb_url)  # with Celery: DST notes
    now = datetime.now(UTC)
    assert run.code == 1
    skipped = run.skipped()
    assert set(skipped) == set(SKIPPED)
    for name, reason in SKIPPED.items():
        assert reason in skipped[name]

    schedules = settings_of(run.out).schedules
    compared = [s for s in schedules if s.enabled]
    until = now + YEAR
    fires = json.loads(django(import_python, "fires", dcb_url, now.isoformat(), until.isoformat()))
    source = {
        s.name: [datetime.fromisoformat(t) for t in fires[_source_name(s.name)]] for s in compared
    }
    for s in compared:
        if s.max_fires is not None:  # one_off: django-celery-beat disables it after one run
            source[s.name] = source[s.name][: s.max_fires]

    diffs = differences(source, compared, now, until)
    named = at_dst_changes(diffs, compared, now, until)
    assert {(name, kind) for name, _, kind in named} == EXPECTED_DST
    assert {(name, day) for name, day, _ in named} == run.dst_notes()


def _source_name(name: str) -> str:
    return " padded name " if name == "padded name" else name


def test_fields_map_as_documented(
    dcb_url: str, no_django: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_import(capsys, "django-celery-beat", dcb_url)
    by_name = {s.name: s for s in settings_of(run.out).schedules}

    assert "imported as 'padded name'" in run.err  # made valid, and said so
    report = by_name["nightly-report"]
    assert report.expires == timedelta(hours=1)  # expire_seconds: the message's TTL
    assert report.queue == "reports" and dict(report.kwargs) == {"full": True}
    assert report.headers["periodic_task_name"] == "nightly-report"
    monday = by_name["first-monday"]
    assert monday.kind == "rrule" and monday.timezone.key == "America/New_York"
    assert (monday.exchange, monday.routing_key, monday.priority) == ("crm", "crm.monthly", 7)
    assert monday.headers["team"] == "crm" and monday.args == (1, "two")
    campaign = by_name["campaign"]
    assert campaign.end is not None and campaign.expires is None  # expires: the schedule's end
    assert not by_name["paused-cleanup"].enabled
    assert by_name["once-hourly"].max_fires == 1 and by_name["launch"].kind == "at"
    sync = by_name["sync"].spec
    assert isinstance(sync, Every)  # anchored at last_run_at: the next fire Celery would send
    assert timedelta(0) < datetime.now(UTC) - sync.anchor < timedelta(minutes=10)
    assert by_name["digest"].start is not None  # start_time still to come


def test_to_database_pauses_disabled_and_refuses_existing_names(
    dcb_url: str, no_django: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = str(tmp_path / "beatd.toml")
    (tmp_path / "beatd.toml").write_text(f'[beatd]\ndatabase = "sqlite:///{tmp_path}/beat.db"\n')
    assert main(["--config", config, "db", "upgrade"]) == 0
    run = run_import(capsys, "django-celery-beat", dcb_url, "--to-database", "--config", config)
    assert run.code == 1 and "to database" in run.err

    with Beat.from_config(config) as beat:
        infos = {info.name: info for info in beat.list()}
        assert infos["paused-cleanup"].state == "paused"
        assert "disabled in django-celery-beat" in (infos["paused-cleanup"].note or "")
        assert infos["nightly-report"].state == "active"
        assert infos["nightly-report"].next_at is not None
        assert infos["nightly-report"].next_at > datetime.now(UTC) - timedelta(seconds=1)

    again = run_import(capsys, "django-celery-beat", dcb_url, "--to-database", "--config", config)
    assert "skipped 'nightly-report': a schedule of that name exists (use --replace" in again.err
    replaced = run_import(
        capsys, "django-celery-beat", dcb_url, "--to-database", "--replace", "--config", config
    )
    assert "exists" not in replaced.err
