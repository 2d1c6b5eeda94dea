"""Crontab-like calendars whose fields must all match, as beatd cron or rrule text.

Celery's `crontab` and APScheduler's `CronTrigger` fire when *every* field
matches: a day must be in day-of-month AND in day-of-week. Cron (SPEC §3)
ORs the two when both are restricted. A calendar that restricts both
becomes an rrule (BYMONTHDAY and BYDAY limit each other there); the others
become cron. Either way it is *frequent* or *fixed* at DST changes by the
same rule as cron: more than one (second, minute) pair, or all 24 hours.

`parse_celery_field` reads a Celery crontab field as Celery does (numbers,
names, `*`, ranges that may wrap, steps, lists), for sources that store the
text (django-celery-beat) and cannot count on Celery being installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SECONDS = range(60)
MINUTES = range(60)
HOURS = range(24)
DAYS = range(1, 32)
MONTHS = range(1, 13)
WEEKDAYS = range(7)  # cron numbering: 0 = Sunday

AND_NOTE = "an rrule: the day must match day of month AND day of week, as the source means it"
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_RRULE_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")


@dataclass(frozen=True, slots=True)
class Calendar:
    """Value sets that must all match. `days` may hold -1 (the month's last day);
    `nth` holds (n, weekday) pairs such as (1, 1) for the first Monday, (-1, 5) for
    the last Friday, which take the place of `days` and `weekdays`."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int] = frozenset(DAYS)
    months: frozenset[int] = frozenset(MONTHS)
    weekdays: frozenset[int] = frozenset(WEEKDAYS)
    seconds: frozenset[int] = frozenset({0})
    nth: frozenset[tuple[int, int]] = frozenset()

    @property
    def frequent(self) -> bool:
        return len(self.seconds) * len(self.minutes) > 1 or len(self.hours) == 24


def to_spec(cal: Calendar) -> tuple[str, str]:
    """("cron", expression) or ("rrule", rule) firing on exactly the calendar's instants."""
    for values, domain, what in (
        (cal.seconds, SECONDS, "second"),
        (cal.minutes, MINUTES, "minute"),
        (cal.hours, HOURS, "hour"),
        (cal.months, MONTHS, "month"),
        (cal.weekdays, WEEKDAYS, "day of week"),
    ):
        if not values or not values <= frozenset(domain):
            raise ValueError(f"no valid {what} in {sorted(values)}")
    if not cal.days and not cal.nth:
        raise ValueError("no valid day of month")
    special = cal.nth or -1 in cal.days
    both = cal.days != frozenset(DAYS) and cal.weekdays != frozenset(WEEKDAYS)
    if special or both:
        return "rrule", _rrule(cal)
    fields = [
        cron_field(cal.minutes, MINUTES),
        cron_field(cal.hours, HOURS),
        cron_field(cal.days, DAYS),
        cron_field(cal.months, MONTHS),
        cron_field(cal.weekdays, WEEKDAYS),
    ]
    if cal.seconds != {0}:
        fields.insert(0, cron_field(cal.seconds, SECONDS))
    return "cron", " ".join(fields)


def cron_field(values: Iterable[int], domain: range) -> str:
    """The shortest usual spelling: `*`, `*/n`, then ranges and single values."""
    chosen = sorted(set(values))
    if chosen == list(domain):
        return "*"
    for step in range(2, len(domain)):
        if len(chosen) > 2 and chosen == list(domain[::step]):
            return f"*/{step}"
    runs: list[str] = []
    start = prev = chosen[0]
    for value in [*chosen[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ",".join(runs)


def _numbers(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def _rrule(cal: Calendar) -> str:
    if cal.nth:
        freq = "MONTHLY"  # BYDAY=1MO is only defined for monthly and yearly rules
    else:
        freq = "HOURLY" if cal.frequent else "DAILY"
    parts = [f"FREQ={freq}"]
    if cal.months != frozenset(MONTHS):
        parts.append(f"BYMONTH={_numbers(cal.months)}")
    if cal.nth:
        parts.append("BYDAY=" + ",".join(f"{n}{_RRULE_DAYS[d]}" for n, d in sorted(cal.nth)))
    else:
        if cal.days != frozenset(DAYS):
            parts.append(f"BYMONTHDAY={_numbers(cal.days)}")
        if cal.weekdays != frozenset(WEEKDAYS):
            parts.append("BYDAY=" + ",".join(_RRULE_DAYS[d] for d in sorted(cal.weekdays)))
    if cal.hours != frozenset(HOURS):
        parts.append(f"BYHOUR={_numbers(cal.hours)}")
    parts.append(f"BYMINUTE={_numbers(cal.minutes)}")
    parts.append(f"BYSECOND={_numbers(cal.seconds)}")
    return ";".join(parts)


# -- Celery's crontab field syntax -------------------------------------------------


def parse_celery_field(text: str, domain: range) -> frozenset[int]:
    """A Celery crontab field (`'*/15'`, `'mon-fri'`, `'22-2'`, `'1,15'`) as its value set.

    ValueError, with a line fit for a user, for what Celery would refuse.
    """
    values: set[int] = set()
    for part in str(text).replace(" ", "").lower().split(","):
        if not part:
            raise ValueError(f"empty part in {text!r}")
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"invalid step in {text!r}")
            step = int(step_text)
        if body == "*":
            chosen = list(domain)
        else:
            first_text, dash, last_text = body.partition("-")
            if slash and not dash:
                raise ValueError(f"a step needs '*' or a range, got {part!r} in {text!r}")
            first = _celery_number(first_text, domain, text)
            last = _celery_number(last_text, domain, text) if dash else first
            if last < first:  # Celery wraps: hour '22-2' is 22, 23, 0, 1, 2
                chosen = [*range(first, domain.stop), *range(domain.start, last + 1)]
            else:
                chosen = list(range(first, last + 1))
        values.update(chosen[::step])
    return frozenset(values)


def _celery_number(word: str, domain: range, text: str) -> int:
    if word.isdigit():
        value = int(word)
    elif word[:3] in _DAY_NAMES and domain == WEEKDAYS:
        value = _DAY_NAMES.index(word[:3])
    elif word[:3] in _MONTH_NAMES and domain == MONTHS:
        value = _MONTH_NAMES.index(word[:3]) + 1
    else:
        raise ValueError(f"invalid value {word!r} in {text!r}")
    if value not in domain:
        raise ValueError(f"{value} is out of range {domain.start}-{domain.stop - 1} in {text!r}")
    return value
