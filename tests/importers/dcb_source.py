"""django-celery-beat's side of the import test, run in a subprocess (Django is global state).

    python dcb_source.py make DB_URL     migrate with Django, create periodic tasks with the ORM
    python dcb_source.py fires DB_URL AFTER UNTIL   each task's next fires as
                                         django-celery-beat's own schedule objects compute them

DB_URL is a SQLAlchemy URL (sqlite:///PATH or postgresql+psycopg://user@host:port/db).
Output is JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

CUTOVER_ZONE = "Europe/Berlin"


def configure(url: str) -> None:
    import django
    from django.conf import settings

    if url.startswith("sqlite"):
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": url.split(":///", 1)[1]}
    else:
        parts = urlsplit(url)
        database = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.path.lstrip("/"),
            "USER": parts.username or "postgres",
            "HOST": parts.hostname or "127.0.0.1",
            "PORT": str(parts.port or 5432),
        }
    settings.configure(
        INSTALLED_APPS=["django_celery_beat"],
        DATABASES={"default": database},
        USE_TZ=True,
        TIME_ZONE="UTC",
        CELERY_TIMEZONE=CUTOVER_ZONE,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()


def make() -> None:
    from django.core.management import call_command
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
        SolarSchedule,
    )

    call_command("migrate", verbosity=0)
    now = datetime.now(UTC).replace(microsecond=0)

    def cron(minute: str, hour: str, dom: str = "*", dow: str = "*", month: str = "*",
             tz: str = CUTOVER_ZONE) -> CrontabSchedule:  # fmt: skip
        return CrontabSchedule.objects.create(
            minute=minute, hour=hour, day_of_month=dom, day_of_week=dow,
            month_of_year=month, timezone=tz,
        )  # fmt: skip

    def every(n: int, period: str) -> IntervalSchedule:
        return IntervalSchedule.objects.create(every=n, period=period)

    task = PeriodicTask.objects.create
    task(name="nightly-report", task="reports.nightly", crontab=cron("30", "2"),
         kwargs=json.dumps({"full": True}), queue="reports", expire_seconds=3600)  # fmt: skip
    task(name="office-poll", task="crm.poll", crontab=cron("*/15", "8-18", dow="mon-fri"))
    task(name="first-monday", task="crm.first_monday",
         crontab=cron("0", "9", dom="1-7", dow="mon", tz="America/New_York"),
         args=json.dumps([1, "two"]), priority=7, exchange="crm", routing_key="crm.monthly",
         headers=json.dumps({"team": "crm"}))  # fmt: skip
    task(name="night-shift", task="ops.night", crontab=cron("0,30", "22-2"))
    task(name="quarterly", task="fin.quarterly", crontab=cron("15", "6", dom="1", month="1-12/3"))
    task(name="sync", task="crm.sync", interval=every(10, IntervalSchedule.MINUTES),
         last_run_at=now - timedelta(minutes=3))  # fmt: skip
    task(name="digest", task="mail.digest", interval=every(2, IntervalSchedule.HOURS),
         start_time=now + timedelta(hours=5))  # fmt: skip
    task(name="launch", task="ops.launch", one_off=True,
         clocked=ClockedSchedule.objects.create(clocked_time=now + timedelta(days=40)))  # fmt: skip
    task(name="launched", task="ops.launch", one_off=True,
         clocked=ClockedSchedule.objects.create(clocked_time=now - timedelta(days=2)))  # fmt: skip
    task(name="dawn", task="farm.dawn", solar=SolarSchedule.objects.create(
        event="sunrise", latitude=52.52, longitude=13.40))  # fmt: skip
    task(name="paused-cleanup", task="ops.cleanup", crontab=cron("0", "4"), enabled=False)
    task(name="once-hourly", task="ops.once", one_off=True, crontab=cron("5", "*"))
    task(name="campaign", task="mail.campaign", crontab=cron("0", "10", dow="sat,sun"),
         expires=now + timedelta(days=60))  # fmt: skip
    task(name="broken-args", task="ops.broken", crontab=cron("0", "5"), args="[1, 2")
    task(name=" padded name ", task="ops.padded", crontab=cron("45", "23"))


def fires(after: datetime, until: datetime) -> None:
    """Each task's fires in (after, until], chained as beat runs them: last run -> next."""
    from django_celery_beat.models import PeriodicTask

    out: dict[str, list[str]] = {}
    for task in PeriodicTask.objects.all():
        if task.solar_id is not None:
            continue
        schedule = task.schedule
        found: list[str] = []
        clock = [after]
        schedule.nowfun = lambda clock=clock: clock[0]
        if task.clocked_id is not None:
            at = task.clocked.clocked_time
            out[task.name] = [at.astimezone(UTC).isoformat()] if after < at <= until else []
            continue
        # As ModelEntry: an interval runs from its last run, else from when it was last
        # changed; nothing is due before start_time, and then the overdue run goes at once.
        last = task.last_run_at or task.date_changed
        start = task.start_time
        while len(found) < 20000:
            clock[0] = last
            nxt = last.astimezone(UTC) + schedule.remaining_estimate(last)
            if start is not None and nxt < start:
                nxt = start
            if nxt > until:
                break
            if nxt > after:
                found.append(nxt.isoformat())
            last = nxt
        out[task.name] = found
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    configure(sys.argv[2])
    if sys.argv[1] == "make":
        make()
    else:
        fires(datetime.fromisoformat(sys.argv[3]), datetime.fromisoformat(sys.argv[4]))
