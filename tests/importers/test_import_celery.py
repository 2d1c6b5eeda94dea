"""`beatd import celery`: a real Celery app's beat_schedule, converted, then every
converted schedule's fires over a year compared with the fires Celery itself computes
(crontab and schedule `remaining_estimate`, chained from each fire as beat runs them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from import_support import HERE, MAX_FIRES, YEAR, at_dst_changes, differences, run_import
from import_support import settings_of as read_toml

from beatd.cli.main import main
from beatd.model import Every

celery = pytest.importorskip("celery")

# Where Celery 5.7 itself differs from SPEC §3 at Europe/Berlin's DST changes.
EXPECTED_DST = {
    ("nightly-report", "spring"),  # Celery 03:30 for the skipped 02:30; beatd 03:00
    ("fall-back-hour", "spring"),  # the same for 02:30 (its 01:30 and 03:30 agree)
    ("night-shift", "spring"),  # frequent: Celery adds 03:00, beatd skips the gap
    ("night-shift", "fall"),  # frequent: Celery skips the repeated 02:00 and 02:30
}


def celery_fires(sched: object, last_run: datetime, until: datetime) -> list[datetime]:
    """Celery's own next fires: beat's last_run_at is each fire, and now is that instant."""
    clock = [last_run]
    sched.nowfun = lambda: clock[0]  # type: ignore[attr-defined]
    fires: list[datetime] = []
    last = last_run
    while len(fires) < MAX_FIRES:
        clock[0] = last
        nxt = last.astimezone(UTC) + sched.remaining_estimate(last)  # type: ignore[attr-defined]
        if nxt > until:
            return fires
        fires.append(nxt)
        last = nxt
    return fires


@pytest.fixture
def app_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(HERE)  # `celery -A` imports the app from the current directory
    return HERE


def test_every_fire_matches_celery_or_is_a_named_dst_difference(
    app_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = run_import(capsys, "celery", "celery_beat_app:app")
    now = datetime.now(UTC)  # after the cutover: what the import wrote fires from here on

    assert run.code == 1
    skipped = run.skipped()
    assert set(skipped) == {"sunrise", "not-json"}
    assert "solar" in skipped["sunrise"]
    assert "not JSON" in skipped["not-json"]
    path = tmp_path / "beatd.toml"
    path.write_text(run.out)
    assert main(["--config", str(path), "validate"]) == 0  # valid as it stands

    import celery_beat_app

    schedules = read_toml(run.out).schedules
    entries = celery_beat_app.app.conf.beat_schedule
    after, until = now, now + YEAR
    source = {}
    for s in schedules:
        sched = entries[s.name]["schedule"]
        if isinstance(sched, float | int | timedelta):
            sched = celery.schedules.schedule(sched, app=celery_beat_app.app)
        sched.app = celery_beat_app.app
        # An interval runs from beat's start: the cutover, which the import wrote as the anchor.
        last = s.spec.anchor if isinstance(s.spec, Every) else after
        source[s.name] = celery_fires(sched, last, until)

    diffs = differences(source, schedules, after, until)
    named = at_dst_changes(diffs, schedules, after, until)
    assert {(name, kind) for name, _, kind in named} == EXPECTED_DST
    assert {(name, day) for name, day, _ in named} == run.dst_notes()  # the import said so


def test_mapping_of_options_arguments_and_kinds(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_import(capsys, "celery", "celery_beat_app:app")
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
    assert dict(by_name["fall-back-hour"].headers) == {"origin": "beat"}
    assert by_name["heartbeat"].spec.period == timedelta(seconds=30)  # type: ignore[union-attr]
    hourly = by_name["hourly-relative"].spec
    assert isinstance(hourly, Every) and hourly.anchor.minute == hourly.anchor.second == 0
    assert "# from beat_schedule['nightly-report']" in run.out


def test_bad_app_is_one_line_exit_2(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_import(capsys, "celery", "no_such_module_here:app")
    assert run.code == 2
    assert run.err.count("\n") == 1 and "cannot import the Celery app" in run.err
    assert "Traceback" not in run.err
