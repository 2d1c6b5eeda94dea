"""The Celery app `celery beat` runs in the benchmark; imported only in that process.

Celery beat's default scheduler (PersistentScheduler, a shelve file) with the
broker's publisher confirms on. Beat does not put a fire's scheduled instant
in its message, so `StampingScheduler` adds it as the `beatd-scheduled-for`
header: the instant Celery itself judged the entry due, `last_run_at +
run_every` for interval entries (the crontab's next instant for cron
entries), computed from the entry before beat advances it. Celery intervals
run from the previous *actual* run, so they drift by each fire's lag; the
header measures beat's own lateness per fire and does not charge it that
drift. Entries start on the same grid as every other system's (their
initial `last_run_at` is the grid instant before launch).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from celery.beat import PersistentScheduler, ScheduleEntry
from celery.schedules import crontab, schedule

from bench.harness.workloads import TASK, Interval, iso
from bench.peers.plan_file import PeerPlan, read

HEADER = "beatd-scheduled-for"


class StampingScheduler(PersistentScheduler):
    """PersistentScheduler whose messages carry the instant each fire was due."""

    def apply_async(
        self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        every = entry.schedule
        if isinstance(every, schedule) and not isinstance(every, crontab):
            due = every.maybe_make_aware(entry.last_run_at) + every.run_every
        else:  # crontab: now + remaining, which reads the clock twice; its instants are whole
            # minutes, so rounding to the second removes those microseconds exactly.
            due = every.maybe_make_aware(every.now()) + every.remaining_estimate(entry.last_run_at)
            due = datetime.fromtimestamp(round(due.timestamp()), UTC)
        if advance:
            self.reserve(entry)
        # Send a copy: beat compares the entries it holds with its last snapshot on every
        # tick and rebuilds its heap when one differs, so the held entry stays untouched.
        stamped = self.Entry(
            name=entry.name,
            task=entry.task,
            last_run_at=entry.last_run_at,
            total_run_count=entry.total_run_count,
            schedule=entry.schedule,
            args=entry.args,
            kwargs=entry.kwargs,
            options={**entry.options, "headers": {HEADER: iso(due.timestamp())}},
            app=self.app,
        )
        return super().apply_async(stamped, producer, False, **kwargs)


def _interval_entry(interval: Interval, now: float, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": TASK,
        "schedule": timedelta(seconds=interval.period),
        "last_run_at": datetime.fromtimestamp(interval.last_at_or_before(now), UTC),
        "options": options,
    }


def beat_schedule(plan: PeerPlan) -> dict[str, dict[str, Any]]:
    now = time.time()
    entries = {plan.probe.name: _interval_entry(plan.probe, now, {"queue": plan.probe_queue})}
    for interval in plan.intervals:
        entries[interval.name] = _interval_entry(interval, now, {})
    if plan.burst is not None:
        every = plan.burst.every
        for name in plan.burst.names:
            if every == 60:
                entries[name] = {"task": TASK, "schedule": crontab()}
            else:  # the smoke run's short burst: crontab has no seconds field
                entries[name] = _interval_entry(Interval(name, every, 0), now, {})
    return entries


def make_app(plan: PeerPlan) -> Celery:
    celery = Celery("bench", broker=plan.amqp_url)
    celery.conf.update(
        timezone="UTC",
        enable_utc=True,
        task_default_queue=plan.queue,
        broker_transport_options={"confirm_publish": True},
        beat_schedule=beat_schedule(plan),
    )
    return celery


app = make_app(read(os.environ["BENCH_CELERY_PLAN"]))
