"""Shared by the import tests: run `beatd import`, read its TOML back, and compare the
converted schedules' fires (beatd's `upcoming`) with the fires the source computed."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from beatd.cli.main import main
from beatd.config import Settings, settings_from_document
from beatd.importers import dst_changes
from beatd.model import Schedule
from beatd.upcoming import upcoming

HERE = Path(__file__).resolve().parent
YEAR = timedelta(days=366)
MAX_FIRES = 20_000  # per schedule: a year of a quarter-hourly office schedule fits


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def skipped(self) -> dict[str, str]:
        """Skipped schedule -> reason, from stderr."""
        found = re.findall(r"^beatd: skipped '(.+?)': (.*)$", self.err, re.MULTILINE)
        return dict(found)

    def dst_notes(self) -> set[tuple[str, date]]:
        """(schedule, day of the DST change) for each DST note on stderr."""
        found = re.findall(
            r"^beatd: note: (.+?): DST change of (\d{4}-\d\d-\d\d) in ", self.err, re.MULTILINE
        )
        return {(name, date.fromisoformat(day)) for name, day in found}


def run_import(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    capsys.readouterr()
    code = main(["import", *argv])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def run_in(python: str, *argv: str, cwd: Path = HERE) -> Run:
    """`beatd import ARGV` run by another venv's python (one that has the source system)."""
    done = subprocess.run(
        [python, "-m", "beatd.cli.main", "import", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def ask(python: str, script: str, *argv: str, request: object = None) -> Any:
    """Run a source-side script of this folder in `python`; its JSON answer."""
    done = subprocess.run(
        [python, str(HERE / script), *argv],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=HERE,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout) if done.stdout.strip() else None


def settings_of(toml_text: str) -> Settings:
    """The imported TOML, read as beatd reads its config file."""
    return settings_from_document(tomllib.loads(toml_text), env={})


def beatd_fires(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """What `beatd upcoming --schedule NAME --after ... --until ...` lists, from the file."""
    fires = upcoming(
        [schedule], after, limit=MAX_FIRES, after=after, until=until, schedule=schedule.name
    )
    return [f.at for f in fires]


@dataclass(frozen=True)
class Difference:
    schedule: str
    only_source: tuple[datetime, ...]
    only_beatd: tuple[datetime, ...]


def differences(
    source: Mapping[str, Iterable[datetime]],
    schedules: Iterable[Schedule],
    after: datetime,
    until: datetime,
) -> list[Difference]:
    """Each schedule whose fires in (after, until] differ from the source's, capped alike."""
    by_name = {s.name: s for s in schedules}
    assert set(source) == set(by_name), "every converted schedule is compared"
    found: list[Difference] = []
    for name, theirs_iter in sorted(source.items()):
        ours = beatd_fires(by_name[name], after, until)
        # beatd's resolution is one second: a source's microseconds (APScheduler's default
        # interval start is "now") are compared truncated, as the import anchors them.
        theirs = sorted(
            t.astimezone(UTC).replace(microsecond=0) for t in theirs_iter if after < t <= until
        )
        theirs = theirs[:MAX_FIRES]
        horizon = min(ours[-1] if ours else until, theirs[-1] if theirs else until)
        ours_set = {t for t in ours if t <= horizon}
        theirs_set = {t for t in theirs if t <= horizon}
        assert ours or theirs, f"{name}: compared over a span with no fire at all"
        if ours_set != theirs_set:
            only_s = tuple(sorted(theirs_set - ours_set))
            only_b = tuple(sorted(ours_set - theirs_set))
            found.append(Difference(name, only_s, only_b))
    return found


def at_dst_changes(
    diffs: Iterable[Difference], schedules: Iterable[Schedule], after: datetime, until: datetime
) -> set[tuple[str, date, str]]:
    """(schedule, local day of the change, 'spring' or 'fall') for every differing instant;
    fails for a difference that is not within 27 hours after (3 before) a DST change."""
    by_name = {s.name: s for s in schedules}
    named: set[tuple[str, date, str]] = set()
    for diff in diffs:
        schedule = by_name[diff.schedule]
        changes = list(dst_changes(schedule, after - timedelta(days=2), until))
        for instant in diff.only_source + diff.only_beatd:
            near = [c for c in changes if -timedelta(hours=3) <= instant - c <= timedelta(hours=27)]
            assert near, f"{diff.schedule}: {instant} differs away from any DST change"
            change = near[0]
            before = schedule.timezone.utcoffset(change.replace(tzinfo=None) - timedelta(hours=6))
            after_off = schedule.timezone.utcoffset(
                change.replace(tzinfo=None) + timedelta(hours=6)
            )
            kind = "spring" if after_off > before else "fall"
            local_day = change.astimezone(schedule.timezone).date()
            named.add((diff.schedule, local_day, kind))
    return named
