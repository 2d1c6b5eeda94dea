"""A Celery app as its users write one: a beat_schedule in every form `beatd import celery`
reads, in a zone with DST (the import test converts it and compares fire times)."""

from datetime import timedelta

from celery import Celery
from celery.schedules import crontab, schedule, solar

app = Celery("billing", broker="memory://", set_as_current=False)
app.conf.timezone = "Europe/Berlin"
app.conf.enable_utc = True
app.conf.beat_schedule = {
    "nightly-report": {
        "task": "billing.tasks.nightly_report",
        "schedule": crontab(hour=2, minute=30),
        "kwargs": {"full": True},
        "options": {"queue": "reports", "expires": 3600},
    },
    "every-quarter-hour-office": {
        "task": "billing.tasks.poll",
        "schedule": crontab(minute="*/15", hour="8-18", day_of_week="mon-fri"),
    },
    "night-shift": {
        "task": "billing.tasks.night",
        "schedule": crontab(minute="0,30", hour="22-2"),  # Celery wraps the range
    },
    "first-monday": {  # Celery: day 1-7 AND a Monday (cron would OR them)
        "task": "billing.tasks.first_monday",
        "schedule": crontab(minute=0, hour=9, day_of_month="1-7", day_of_week="monday"),
        "args": [1, "two"],
    },
    "quarterly": {
        "task": "billing.tasks.quarterly",
        "schedule": crontab(minute=15, hour=6, day_of_month=1, month_of_year="jan,apr,jul,oct"),
        "options": {"exchange": "billing", "routing_key": "billing.quarterly", "priority": 5},
    },
    "fall-back-hour": {
        "task": "billing.tasks.late",
        "schedule": crontab(minute=30, hour="1-3"),
        "options": {"headers": {"x-origin": "beat"}},
    },
    "heartbeat": {"task": "billing.tasks.heartbeat", "schedule": 30.0},
    "sync": {"task": "billing.tasks.sync", "schedule": timedelta(minutes=10)},
    "hourly-relative": {
        "task": "billing.tasks.hourly",
        "schedule": schedule(run_every=timedelta(hours=1), relative=True),
    },
    "sunrise": {"task": "billing.tasks.sunrise", "schedule": solar("sunrise", 52.52, 13.40)},
    "not-json": {
        "task": "billing.tasks.bad",
        "schedule": crontab(minute=0),
        "args": [object()],
    },
}


@app.task(name="billing.tasks.hello")
def hello(who: str) -> str:
    return who


@app.on_after_configure.connect
def add_periodic(sender: Celery, **kwargs: object) -> None:
    """The other way apps declare beat entries: added when the app is configured."""
    sender.add_periodic_task(300.0, hello.s("world"), name="hello-signal", expires=60)
