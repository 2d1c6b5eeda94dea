"""The benchmark suite's smoke run: every workload and system, tiny sizes, no timing asserted.

Keeps bench/ from rotting: it runs `bench/run.py --smoke` end to end against
the real PostgreSQL and RabbitMQ and checks that every run produced figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]
PEERS = ("celery-beat", "apscheduler3")


def test_smoke_run_covers_every_workload(
    pg_url: str, amqp_server: str, celery_python: str, tmp_path: Path
) -> None:
    """`celery_python`: Celery beat runs from Celery's own venv, made before the run."""
    out = tmp_path / "smoke.json"
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"]
    argv += ["--pg", pg_url, "--amqp", amqp_server, "--json", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    results = json.loads(out.read_text())["results"]
    ran = {(r["system"], r["workload"].split("-")[0]) for r in results if not r["skipped"]}
    for system in ("beatd", *PEERS):
        assert (system, "steady") in ran
        assert (system, "burst") in ran
    for mode in ("one-by-one", "batched", "no-confirms"):
        assert (f"pika-{mode}", "ceiling") in ran
    for workload in ("startup", "toml", "catch", "failover", "million"):
        assert ("beatd", workload) in ran
    for r in results:
        assert not r["skipped"], f"{r['system']} {r['workload']}: {r['skipped']}"
        if r["workload"].startswith(("steady", "burst", "ceiling", "partitioned-20-")):
            assert r["metrics"]["delivered"] > 0
            assert r["metrics"]["duplicates"] == 0
    by_name = {r["workload"]: r["metrics"] for r in results if r["system"] == "beatd"}
    # One leader and two instances sharing P = 4, each against this run's publish floor.
    assert "p99_over_floor" in by_name["partitioned-20-1x1"]
    assert "cpu_per_fire_ratio" in by_name["partitioned-20-2x4"]
    assert by_name["partitioned-failover-2x4-lease2s"]["moved"] >= 2
    assert "beatd" in done.stdout
