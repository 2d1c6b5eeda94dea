"""`beatd import apscheduler`: a SQLAlchemyJobStore written by APScheduler 3 itself (SQLite
and PostgreSQL), converted, then every job's fires over a year compared with APScheduler's
own: the stored next_run_time, then trigger.get_next_fire_time chained from each fire."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from import_support import MAX_FIRES, YEAR, at_dst_changes, differences, run_import, settings_of

from beatd.model import Every, Misfire

pytest.importorskip("apscheduler")
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

BERLIN = ZoneInfo("Europe/Berlin")
# Where APScheduler 3 differs from SPEC §3 at Europe/Berlin's DST changes.
EXPECTED_DST = {
    ("nightly", "spring"),  # APScheduler 03:30 for the skipped 02:30; beatd 03:00
    ("nightly", "fall"),  # APScheduler fires both 02:30s; beatd the first (a fixed time)
}


def build_store(url: str, now: datetime) -> None:
    """The jobs, added through APScheduler's own API into its SQLAlchemy job store."""
    store = SQLAlchemyJobStore(url=url)
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone=BERLIN)
    scheduler.start(paused=True)
    add = scheduler.add_job
    add("aps_jobs:nightly", "cron", hour=2, minute=30, id="nightly", kwargs={"full": True},
        misfire_grace_time=300, coalesce=False)  # fmt: skip
    add("aps_jobs:poll", "cron", day_of_week="mon-fri", hour="8-18", minute="*/15",
        id="office poll")  # fmt: skip
    add("aps_jobs:poll", "cron", day="last fri", hour=17, id="last-friday")
    add("aps_jobs:poll", "cron", day="1-7", day_of_week="mon", hour=9, id="first-monday")
    add("aps_jobs:poll", "cron", day_of_week="sun", hour=12, minute=0, second=30, id="sunday-noon",
        end_date=now + timedelta(days=200), misfire_grace_time=None)  # fmt: skip
    add("aps_jobs:poll", "interval", minutes=45, id="every-45m",
        start_date=datetime(2026, 1, 1, 0, 7, tzinfo=BERLIN))  # fmt: skip
    add("aps_jobs:poll", "interval", hours=6, id="six-hourly")
    add("aps_jobs:poll", "date", run_date=now + timedelta(days=30), id="once", args=[1, "x"])
    add("aps_jobs:poll", "cron", minute=5, id="paused-hourly").pause()
    scheduler.shutdown()
    store.engine.dispose()  # the paused scheduler's shutdown leaves its pool open


def aps_fires(job: object, until: datetime) -> list[datetime]:
    fires: list[datetime] = []
    at = job.next_run_time  # type: ignore[attr-defined]
    while at is not None and at <= until and len(fires) < MAX_FIRES:
        fires.append(at)
        at = job.trigger.get_next_fire_time(at, at)  # type: ignore[attr-defined]
    return fires


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_fire_matches_apscheduler_or_is_a_named_dst_difference(
    backend: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    build_store(url, datetime.now(UTC))
    run = run_import(capsys, "apscheduler", url)
    now = datetime.now(UTC)
    assert run.code == 0, run.err

    schedules = settings_of(run.out).schedules
    by_name = {s.name: s for s in schedules}
    store = SQLAlchemyJobStore(url=url)
    jobs = {job.id: job for job in store.get_all_jobs()}  # as APScheduler reads them
    store.shutdown()
    assert set(by_name) == set(jobs)
    assert not by_name["paused-hourly"].enabled  # paused job: no next run time
    compared = [s for s in schedules if s.enabled]
    source = {s.name: aps_fires(jobs[s.name], now + YEAR) for s in compared}

    diffs = differences(source, compared, now, now + YEAR)
    named = at_dst_changes(diffs, compared, now, now + YEAR)
    assert {(name, kind) for name, _, kind in named} == EXPECTED_DST
    assert {(name, day) for name, day, _ in named} == run.dst_notes()


def test_options_map_as_documented(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    build_store(sqlite_url, datetime.now(UTC))
    by_name = {
        s.name: s for s in settings_of(run_import(capsys, "apscheduler", sqlite_url).out).schedules
    }
    nightly = by_name["nightly"]
    assert nightly.task == "aps_jobs.nightly"  # the callable reference module:func
    assert nightly.misfire == Misfire.ALL and nightly.grace == timedelta(minutes=5)
    assert by_name["office poll"].spec.expr == "*/15 8-18 * * 1-5"  # type: ignore[union-attr]
    assert by_name["last-friday"].spec.rule.startswith("FREQ=MONTHLY;BYDAY=-1FR")  # type: ignore[union-attr]
    sunday = by_name["sunday-noon"]
    assert sunday.spec.expr == "30 0 12 * * 0"  # type: ignore[union-attr]  # Monday = 0 there
    assert sunday.grace is None and sunday.end is not None
    assert by_name["office poll"].grace == timedelta(seconds=1)  # APScheduler's default
    every = by_name["every-45m"].spec
    assert isinstance(every, Every) and every.anchor.minute % 15 == 7 % 15  # the phase kept
    assert by_name["once"].args == (1, "x")


def test_missing_table_is_exit_2(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    build_store(sqlite_url, datetime.now(UTC))
    run = run_import(capsys, "apscheduler", sqlite_url, "--table", "jobs")
    assert run.code == 2 and "no table jobs" in run.err


class Opaque:
    """A user's class in a job's arguments: neither JSON nor part of APScheduler's state."""


class Payload:
    """A crafted row: unpickling it would run a shell command."""

    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.canary}",)


def test_unpickling_rebuilds_only_a_jobs_state(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build_store(sqlite_url, datetime.now(UTC))
    canary = tmp_path / "ran"
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        (state,) = conn.execute(
            sa.text("SELECT job_state FROM apscheduler_jobs WHERE id = 'once'")
        ).one()
        opaque = pickle.loads(state)
        opaque.update(id="opaque", args=(Opaque(),))
        for job_id, blob in (
            ("opaque", pickle.dumps(opaque)),
            ("crafted", pickle.dumps(Payload(str(canary)))),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO apscheduler_jobs (id, next_run_time, job_state) VALUES (:i, 1, :b)"
                ),
                {"i": job_id, "b": blob},
            )
    engine.dispose()
    run = run_import(capsys, "apscheduler", sqlite_url)
    assert run.code == 1
    skipped = run.skipped()
    assert set(skipped) == {"opaque", "crafted"}
    assert "Opaque is not part of an APScheduler job's state" in skipped["opaque"]
    assert "system is not part of an APScheduler job's state" in skipped["crafted"]
    assert not canary.exists()
