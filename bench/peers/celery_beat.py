"""Celery beat as a peer: `celery beat` with its default scheduler, publishing to RabbitMQ.

Celery runs from a venv of its own (`.venv-celery`, made on first use by
tests/celery_env.py): its pin would downgrade beatd's python-dateutil.
"""

from __future__ import annotations

import subprocess

from bench.harness import procs
from bench.harness.measure import Launched, Plan, Settings
from bench.peers import plan_file

CELERY_ENV = procs.ROOT / "tests" / "celery_env.py"


class CeleryBeat:
    name = "celery-beat"

    def __init__(self) -> None:
        self.python: str | None = None

    def unavailable(self) -> str | None:
        try:
            self._celery_python()
        except RuntimeError as exc:
            return str(exc)
        return None

    def _celery_python(self) -> str:
        if self.python is None:
            done = subprocess.run(
                [procs.python(), str(CELERY_ENV)], capture_output=True, text=True, timeout=900
            )
            if done.returncode != 0:
                raise RuntimeError(f"no Celery venv: {done.stderr.strip()[-300:]}")
            self.python = done.stdout.strip()
        return self.python

    def launch(self, plan: Plan, settings: Settings) -> Launched:
        path = plan_file.write_for(plan, settings, "celery-plan.json")
        log = plan.workdir / "celery-beat.log"
        argv = [self._celery_python(), "-m", "celery", "-A", "bench.peers.celery_app", "beat"]
        argv += ["--scheduler", "bench.peers.celery_app:StampingScheduler"]
        argv += ["--schedule", str(plan.workdir / "celerybeat-schedule")]
        argv += ["--pidfile", str(plan.workdir / "celerybeat.pid"), "--loglevel", "WARNING"]
        proc = procs.start(argv, log, env={"BENCH_CELERY_PLAN": str(path)})
        return Launched(proc, log)
