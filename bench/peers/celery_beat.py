"""Celery beat as a peer: `celery beat` with its default scheduler, publishing to RabbitMQ."""

from __future__ import annotations

import importlib.util

from bench.harness import procs
from bench.harness.measure import Launched, Plan, Settings
from bench.peers import plan_file


class CeleryBeat:
    name = "celery-beat"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("celery") is None:
            return "celery is not installed (pip install -e .[bench])"
        return None

    def launch(self, plan: Plan, settings: Settings) -> Launched:
        path = plan_file.write_for(plan, settings, "celery-plan.json")
        log = plan.workdir / "celery-beat.log"
        argv = [procs.python(), "-m", "celery", "-A", "bench.peers.celery_app", "beat"]
        argv += ["--scheduler", "bench.peers.celery_app:StampingScheduler"]
        argv += ["--schedule", str(plan.workdir / "celerybeat-schedule")]
        argv += ["--pidfile", str(plan.workdir / "celerybeat.pid"), "--loglevel", "WARNING"]
        proc = procs.start(argv, log, env={"BENCH_CELERY_PLAN": str(path)})
        return Launched(proc, log)
