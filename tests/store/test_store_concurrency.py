"""Real processes racing on one database: reconciliation, API writes, the lease."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from store_helpers import close_checked, open_sql
from store_worker import T0, file_schedules

WORKER = Path(__file__).with_name("store_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def race(url: str, tmp_path: Path, jobs: list[list[str]]) -> list[object]:
    """Start one process per job, release them together, return their results."""
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(WORKER.parent)]))
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, str(go), *job],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for job in jobs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line == "ready", proc.stderr.read() if proc.stderr else line
        go.touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_loaders_reconcile_the_same_file(db_url: str, tmp_path: Path) -> None:
    store = open_sql(db_url)
    # before: f00000..f00299 and 300 stale names; the file: f00000..f00999
    store.load_file(file_schedules(300, "f") + file_schedules(300, "stale"), lambda s: T0)
    results = race(db_url, tmp_path, [["load", "1000", "f"], ["load", "1000", "f"]])
    wanted = [s.name for s in file_schedules(1000, "f")]
    assert [s.schedule.name for s in store.all()] == wanted
    assert sorted(results) == [[0, 0, 0], [700, 0, 300]]  # one did it all, the other nothing
    close_checked(store)


def test_an_api_add_during_reconciliation_survives(db_url: str, tmp_path: Path) -> None:
    store = open_sql(db_url)
    store.load_file(file_schedules(2000, "old"), lambda s: T0)
    results = race(db_url, tmp_path, [["load", "3000", "f"], ["put", "api-added"]])
    assert results[1] == "ok"
    names = [s.schedule.name for s in store.all()]
    assert names == ["api-added", *(s.name for s in file_schedules(3000, "f"))]
    close_checked(store)


@pytest.mark.parametrize("workers", [6])
def test_racing_acquirers_one_winner_per_epoch(db_url: str, tmp_path: Path, workers: int) -> None:
    store = open_sql(db_url)
    first = store.acquire("old", timedelta(milliseconds=1), "old")
    assert first is not None
    jobs = [["acquire", f"w{i}", "3", "1.0"] for i in range(workers)]
    results = race(db_url, tmp_path, jobs)
    wins = [(round_, epoch, f"w{i}") for i, won in enumerate(results) for round_, epoch in won]
    epochs = Counter(epoch for _, epoch, _ in wins)
    assert all(count == 1 for count in epochs.values()), wins  # never two holders of one epoch
    assert {round_ for round_, _, _ in wins} == {0, 1, 2}, wins  # every round has a leader
    assert min(epochs) == first.epoch + 1
    assert sorted(epochs) == list(range(first.epoch + 1, first.epoch + 1 + len(epochs)))
    close_checked(store)
