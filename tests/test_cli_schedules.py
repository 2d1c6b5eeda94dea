"""The schedule commands across real processes, on SQLite and PostgreSQL.

Each `beatd` below is its own process: what one adds, pauses or removes is
what the next one reads, because the database is the only shared state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def beatd(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beatd.cli.main", "--config", str(config), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(config: Path, *argv: str) -> str:
    done = beatd(config, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(config: Path, *argv: str) -> Any:
    return json.loads(ok(config, *argv, "--json"))


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Path:
    path = tmp_path / "beatd.toml"
    path.write_text(
        f'[beatd]\ndatabase = "{db_url}"\n\n'
        '[schedules.from-file]\ncron = "0 3 * * *"\ntask = "app.nightly"\n'
    )
    ok(path, "db", "upgrade")
    return path


def test_a_schedule_added_in_one_process_is_seen_by_the_next(config: Path) -> None:
    ok(config, "add", "ping", "--every", "30s", "--task", "app.ping", "--kwargs", '{"n": 1}')

    listed = {row["name"]: row for row in rows(config, "list")}
    assert listed["ping"]["kind"] == "every"
    assert listed["ping"]["source"] == "api"
    assert listed["ping"]["state"] == "active"
    upcoming = rows(config, "upcoming", "--limit", "3", "--schedule", "ping")
    assert [fire["schedule"] for fire in upcoming] == ["ping"] * 3
    assert all(fire["at"].endswith(("00Z", "30Z")) for fire in upcoming)


def test_pause_resume_remove_and_trigger_across_processes(config: Path) -> None:
    ok(config, "add", "report", "--cron", "0 9 * * MON-FRI", "--task", "app.report")
    ok(config, "pause", "report", "--note", "quarter close")
    paused = {row["name"]: row for row in rows(config, "list")}["report"]
    assert (paused["state"], paused["note"]) == ("paused", "quarter close")
    assert rows(config, "upcoming", "--schedule", "report") == []

    ok(config, "resume", "report")
    ok(config, "trigger", "report")
    history = rows(config, "history", "report")
    assert [(h["outcome"], h["manual"]) for h in history] == [("pending", True)]

    ok(config, "remove", "report")
    assert "report" not in {row["name"] for row in rows(config, "list")}
    assert len(rows(config, "history", "report")) == 1  # history outlives the schedule


def test_the_file_owns_its_names(config: Path) -> None:
    for argv in (("remove", "from-file"), ("add", "from-file", "--every", "1m", "--task", "t")):
        done = beatd(config, *argv)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1
        assert "from-file" in done.stderr and "Traceback" not in done.stderr


def test_adding_a_name_twice_needs_replace(config: Path) -> None:
    ok(config, "add", "ping", "--every", "30s", "--task", "app.ping")
    done = beatd(config, "add", "ping", "--every", "1m", "--task", "app.ping")
    assert done.returncode == 2 and "already exists" in done.stderr
    ok(config, "add", "ping", "--every", "1m", "--task", "app.ping", "--replace")
    listed = {row["name"]: row for row in rows(config, "list")}
    assert listed["ping"]["spec"] == "1m"
