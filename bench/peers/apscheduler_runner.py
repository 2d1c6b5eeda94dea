"""APScheduler 3 as a peer: BackgroundScheduler + SQLAlchemyJobStore on the run's PostgreSQL.

Each job publishes one persistent message with pika over one shared
BlockingConnection with publisher confirms (guarded by a lock: pika
connections are not thread-safe). APScheduler does not hand a job its
scheduled run time, so the executor does: `StampingExecutor` is the stock
thread pool executor (a documented extension point) that passes each run
time to the job as `scheduled_for`, which becomes the `beatd-scheduled-for`
header. Job defaults: no coalescing and no misfire grace limit, so a late fire
is sent late (and counted in the lag) rather than silently dropped.

Run as `python -m bench.peers.apscheduler_runner PLAN.json`; the harness's
`APScheduler3.launch` does that.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from types import FrameType, SimpleNamespace
from typing import Any

from bench.harness import procs
from bench.harness.measure import Launched, Plan, Settings
from bench.harness.workloads import TASK, Interval, iso
from bench.peers import plan_file

HEADER = "beatd-scheduled-for"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class APScheduler3:
    name = "apscheduler3"

    def unavailable(self) -> str | None:
        try:
            import apscheduler
        except ImportError:
            return "APScheduler is not installed (pip install -e .[bench])"
        if not apscheduler.__version__.startswith("3."):
            return f"APScheduler {apscheduler.__version__} is not 3.x"
        return None

    def launch(self, plan: Plan, settings: Settings) -> Launched:
        path = plan_file.write_for(plan, settings, "apscheduler-plan.json")
        log = plan.workdir / "apscheduler.log"
        proc = procs.start([procs.python(), "-m", "bench.peers.apscheduler_runner", str(path)], log)
        return Launched(proc, log)


class Publisher:
    """One confirming pika connection shared by the job threads."""

    def __init__(self, amqp_url: str) -> None:
        import pika

        self._pika = pika
        self._lock = threading.Lock()
        self._conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self._channel = self._conn.channel()
        self._channel.confirm_delivery()

    def publish(self, queue: str, name: str, scheduled_for: datetime) -> None:
        stamp = iso(scheduled_for.timestamp())
        fire_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}\x00{stamp}"))
        body = json.dumps(
            {
                "schedule": name,
                "task": TASK,
                "args": [],
                "kwargs": {},
                "scheduled_for": stamp,
                "fire_id": fire_id,
            }
        ).encode()
        props = self._pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            message_id=fire_id,
            headers={HEADER: stamp},
        )
        with self._lock:
            self._channel.basic_publish("", queue, body, props, mandatory=True)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Holder:
    publisher: Publisher | None = None


def fire(name: str, queue: str, scheduled_for: datetime | None = None) -> None:
    """The job every schedule runs (by textual reference, as a job store needs)."""
    assert _Holder.publisher is not None
    assert scheduled_for is not None, "run by StampingExecutor, which passes it"
    _Holder.publisher.publish(queue, name, scheduled_for)


def _executor_class() -> type:
    from apscheduler.executors.base import run_job
    from apscheduler.executors.pool import ThreadPoolExecutor

    class StampingExecutor(ThreadPoolExecutor):  # type: ignore[misc]
        """ThreadPoolExecutor that gives each run its scheduled time as `scheduled_for`."""

        def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
            def run() -> list[Any]:
                events = []
                for run_time in run_times:
                    stamped = SimpleNamespace(
                        id=job.id,
                        func=job.func,
                        args=job.args,
                        kwargs={**job.kwargs, "scheduled_for": run_time},
                        misfire_grace_time=job.misfire_grace_time,
                    )
                    events += run_job(stamped, job._jobstore_alias, [run_time], self._logger.name)
                return events

            def done(future: Any) -> None:
                exc = future.exception()
                if exc is not None:
                    self._run_job_error(job.id, exc, exc.__traceback__)
                else:
                    self._run_job_success(job.id, future.result())

            self._pool.submit(run).add_done_callback(done)

    return StampingExecutor


def _add_jobs(scheduler: Any, plan: plan_file.PeerPlan) -> None:
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    def interval(i: Interval, queue: str) -> None:
        trigger = IntervalTrigger(
            seconds=i.period, start_date=EPOCH + timedelta(seconds=i.offset), timezone=UTC
        )
        scheduler.add_job(
            "bench.peers.apscheduler_runner:fire",
            trigger,
            id=i.name,
            kwargs={"name": i.name, "queue": queue},
        )

    for i in plan.intervals:
        interval(i, plan.queue)
    if plan.burst is not None:
        second = "0" if plan.burst.every == 60 else f"*/{plan.burst.every}"
        for name in plan.burst.names:
            scheduler.add_job(
                "bench.peers.apscheduler_runner:fire",
                CronTrigger(second=second, timezone=UTC),
                id=name,
                kwargs={"name": name, "queue": plan.queue},
            )
    interval(plan.probe, plan.probe_queue)  # last: its first message means all jobs are in


def main(argv: list[str] | None = None) -> int:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    args = sys.argv[1:] if argv is None else argv
    plan = plan_file.read(args[0])
    # Jobs call `fire` by textual reference, i.e. in the imported module, not in __main__.
    from bench.peers import apscheduler_runner

    publisher = apscheduler_runner._Holder.publisher = Publisher(plan.amqp_url)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=plan.db_url)},
        executors={"default": _executor_class()()},
        job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1},
        timezone=UTC,
    )
    scheduler.start()
    _add_jobs(scheduler, plan)
    stop.wait(24 * 3600)
    scheduler.shutdown(wait=False)
    publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
