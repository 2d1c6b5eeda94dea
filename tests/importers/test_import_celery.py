"""`beatd import celery`: a real Celery app's beat_schedule, converted where the app imports
(the import venv: Celery beside beatd, as in a user's app), then every converted schedule's
fires over a year compared with the fires Celery itself computes (celery_source.py)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from import_support import YEAR, Run, ask, at_dst_changes, differences, run_import, run_in
from import_support import settings_of as read_toml

from beatd.cli.main import main
from beatd.model import Every

# Where Celery 5.7 itself differs from SPEC §3 at Europe/Berlin's DST changes.
EXPECTED_DST = {
    ("nightly-report", "spring"),  # Celery 03:30 for the skipped 02:30; beatd 03:00
    ("fall-back-hour", "spring"),  # the same for 02:30 (its 01:30 and 03:30 agree)
    ("night-shift", "spring"),  # frequent: Celery adds 03:00, beatd skips the gap
    ("night-shift", "fall"),  # frequent: Celery skips the repeated 02:00 and 02:30
}


@pytest.fixture(scope="module")
def imported(import_python: str) -> Run:
    """`beatd import celery` where the app imports: Celery's venv, the app's directory."""
    return run_in(import_python, "celery", "celery_beat_app:app")


def test_every_fire_matches_celery_or_is_a_named_dst_difference(
    imported: Run, import_python: str, tmp_path: Path
) -> None:
    run = imported
    now = datetime.now(UTC)  # after the cutover: what the import wrote fires from here on
    assert run.code == 1
    skipped = run.skipped()
    assert set(skipped) == {"sunrise", "not-json"}
    assert "solar" in skipped["sunrise"]
    assert "not JSON" in skipped["not-json"]
    path = tmp_path / "beatd.toml"
    path.write_text(run.out)
    assert main(["--config", str(path), "validate"]) == 0  # valid as it stands

    schedules = read_toml(run.out).schedules
    until = now + YEAR
    # An interval runs from beat's start: the cutover, which the import wrote as the anchor.
    last_run = {
        s.name: (s.spec.anchor if isinstance(s.spec, Every) else now).isoformat() for s in schedules
    }
    answer = ask(
        import_python,
        "celery_source.py",
        request={"until": until.isoformat(), "last_run": last_run},
    )
    source = {name: [datetime.fromisoformat(t) for t in fires] for name, fires in answer.items()}

    diffs = differences(source, schedules, now, until)
    named = at_dst_changes(diffs, schedules, now, until)
    assert {(name, kind) for name, _, kind in named} == EXPECTED_DST
    assert {(name, day) for name, day, _ in named} == run.dst_notes()  # the import said so


def test_mapping_of_options_arguments_and_kinds(imported: Run) -> None:
    run = imported
    by_name = {s.name: s for s in read_toml(run.out).schedules}

    report = by_name["nightly-report"]
    assert report.spec.expr == "30 2 * * *"  # type: ignore[union-attr]
    assert report.timezone.key == "Europe/Berlin"
    assert report.queue == "reports"
    assert report.expires == timedelta(hours=1)
    assert dict(report.kwargs) == {"full": True}

    assert by_name["night-shift"].spec.expr == "0,30 0-2,22-23 * * *"  # type: ignore[union-attr]
    assert by_name["every-quarter-hour-office"].spec.expr == "*/15 8-18 * * 1-5"  # type: ignore[union-attr]
    quarterly = by_name["quarterly"]
    assert quarterly.spec.expr == "15 6 1 */3 *"  # type: ignore[union-attr]
    assert (quarterly.exchange, quarterly.routing_key, quarterly.priority) == (
        "billing",
        "billing.quarterly",
        5,
    )
    first_monday = by_name["first-monday"]
    assert first_monday.kind == "rrule"  # day 1-7 AND Monday: cron would fire on both
    assert first_monday.args == (1, "two")
    assert dict(by_name["fall-back-hour"].headers) == {"x-origin": "beat"}
    assert by_name["heartbeat"].spec.period == timedelta(seconds=30)  # type: ignore[union-attr]
    hourly = by_name["hourly-relative"].spec
    assert isinstance(hourly, Every) and hourly.anchor.minute == hourly.anchor.second == 0
    assert "# from beat_schedule['nightly-report']" in run.out
    hello = by_name["hello-signal"]  # added by add_periodic_task in on_after_configure
    assert (hello.task, hello.args, hello.expires) == (
        "billing.tasks.hello",
        ("world",),
        timedelta(minutes=1),
    )


def test_bad_app_is_one_line_exit_2(import_python: str) -> None:
    run = run_in(import_python, "celery", "no_such_module_here:app")
    assert run.code == 2
    assert run.err.count("\n") == 1 and "cannot import the Celery app" in run.err
    assert "Traceback" not in run.err


def test_without_celery_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "celery.app.utils", None)  # import fails, as where none is
    run = run_import(capsys, "celery", "celery_beat_app:app")
    assert run.code == 2 and "celery is not installed here" in run.err
