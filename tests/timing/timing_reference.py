"""A brute-force reference for fire times that shares none of the engine's code.

It walks every UTC minute (every second when seconds matter) of a window,
turns it into local wall time with zoneinfo (whose `fold` says which
occurrence of a repeated wall time it is), asks a matcher whether that wall
time matches, and applies SPEC §3 from its definition:

- frequent: fires whenever the wall time matches;
- fixed: fires when it matches and is not the second occurrence of a repeated
  wall time, plus at each spring-forward transition whose gap holds a match.

Matchers: `CronReference` reads an expression field by field from the
definitions (Vixie's day rule, Quartz's L, W, LW and #, a one-value range is
one value, a reversed range wraps); H is croniter's hash, asked for one field
at a time. `RRuleReference` takes dateutil's occurrences iterated from DTSTART
with its own COUNT and UNTIL (no re-anchoring), a date UNTIL meaning its whole
day and a UNTIL with Z filtering instants.

`random_case(rng)` draws a cron or rrule expression from a grammar, a zone
from every IANA zone, and a window near a DST transition, a month's end or
anywhere; `check_case` compares the engine with the reference on it.
"""

from __future__ import annotations

import calendar
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from croniter import croniter
from dateutil.rrule import rrulestr

from beatd.model import Cron, RRule, Schedule
from beatd.timing import check_spec, fires_between

MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
DAYS = "sun mon tue wed thu fri sat".split()
FIELDS = ("sec", "min", "hour", "dom", "month", "dow")
BOUNDS = {
    "sec": (0, 59, None),
    "min": (0, 59, None),
    "hour": (0, 23, None),
    "dom": (1, 31, None),
    "month": (1, 12, MONTHS),
    "dow": (0, 7, DAYS),
}
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


# -- cron ----------------------------------------------------------------------


def _value(text: str, field: str) -> int:
    _, _, names = BOUNDS[field]
    if names and text.lower() in names:
        return names.index(text.lower()) + (1 if field == "month" else 0)
    return int(text)


def parse_field(text: str, field: str) -> set[int]:
    """The values of a field of plain items: numbers, names, `*`, ranges, steps, lists."""
    low, high, _ = BOUNDS[field]
    top = 6 if field == "dow" else high  # `*` and `a/step` stop here (Sunday is 0)
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body in ("*", "?"):
            first, last = low, top
        elif "-" in body:
            a, b = body.split("-")
            first, last = _value(a, field), _value(b, field)
        else:
            first = _value(body, field)
            last = top if step_text else first
        if first == last:
            values.add(first)
        elif first < last:
            values.update(range(first, last + 1, step))
        else:  # wraps around the end of the field
            values.update(range(first, high + 1))
            values.update(range(low, last + 1))
    if field == "dow":
        values = {v % 7 for v in values}
    return values


def _hashed(item: str, field: str, name: str) -> set[int]:
    """H: croniter's hash of the schedule's name for this field, one field at a time."""
    fields = ["*"] * 6
    fields[FIELDS.index(field)] = "h(1-28)" if field == "dom" and item == "h" else item
    expanded, _ = croniter.expand(" ".join(fields), hash_id=name.encode(), second_at_beginning=True)
    return {
        int(v) % (7 if field == "dow" else 100)
        for v in expanded[(5, 0, 1, 2, 3, 4)[FIELDS.index(field)]]
    }


def _weekdays(year: int, month: int) -> list[int]:
    ndays = calendar.monthrange(year, month)[1]
    return [d for d in range(1, ndays + 1) if calendar.weekday(year, month, d) < 5]


def nearest_weekday(year: int, month: int, target: int) -> int:
    """Quartz W: the Monday-to-Friday day of the month closest to target (earlier on a tie)."""
    target = min(target, calendar.monthrange(year, month)[1])
    return min(_weekdays(year, month), key=lambda d: (abs(d - target), d))


class CronReference:
    def __init__(self, expr: str, name: str = "ref") -> None:
        fields = expr.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        self.sets: dict[str, set[int]] = {}
        self.last = self.last_weekday = False
        self.nearest: set[int] = set()
        self.nth: set[tuple[int, int]] = set()  # (weekday, k): k-th of the month
        self.last_of: set[int] = set()  # weekday: its last in the month
        for field, text in zip(FIELDS, fields, strict=True):
            plain = []
            for item in text.lower().split(","):
                if item.startswith("h"):
                    self.sets.setdefault(field, set()).update(_hashed(item, field, name))
                elif field == "dom" and self._dom_special(item):
                    pass
                elif field == "dow" and self._dow_special(item):
                    pass
                else:
                    plain.append(item)
            if plain:
                self.sets.setdefault(field, set()).update(parse_field(",".join(plain), field))
            self.sets.setdefault(field, set())
        self.dom_any = fields[3] in ("*", "?")
        self.dow_any = fields[5] in ("*", "?")
        self.day_or = not fields[3].startswith(("*", "?")) and not fields[5].startswith(("*", "?"))
        self.frequent = (
            len(self.sets["sec"]) * len(self.sets["min"]) > 1 or len(self.sets["hour"]) == 24
        )

    def _dom_special(self, item: str) -> bool:
        if item == "l":
            self.last = True
        elif item == "lw":
            self.last_weekday = True
        elif m := re.fullmatch(r"(\d+)w|w(\d+)", item):
            self.nearest.add(int(m.group(1) or m.group(2)))
        else:
            return False
        return True

    def _dow_special(self, item: str) -> bool:
        if m := re.fullmatch(r"(\w+)#(\d)", item):
            self.nth.add((_value(m.group(1), "dow") % 7, int(m.group(2))))
        elif m := re.fullmatch(r"(\w+)l|l(\w+)", item):
            self.last_of.add(_value(m.group(1) or m.group(2), "dow") % 7)
        else:
            return False
        return True

    def _dom_ok(self, wall: datetime) -> bool:
        ndays = calendar.monthrange(wall.year, wall.month)[1]
        return (
            wall.day in self.sets["dom"]
            or (self.last and wall.day == ndays)
            or (self.last_weekday and wall.day == _weekdays(wall.year, wall.month)[-1])
            or any(wall.day == nearest_weekday(wall.year, wall.month, n) for n in self.nearest)
        )

    def _dow_ok(self, wall: datetime) -> bool:
        dow = wall.isoweekday() % 7
        ndays = calendar.monthrange(wall.year, wall.month)[1]
        return (
            dow in self.sets["dow"]
            or (dow, (wall.day - 1) // 7 + 1) in self.nth
            or (dow in self.last_of and wall.day + 7 > ndays)
        )

    def matches(self, wall: datetime) -> bool:
        s = self.sets
        if (
            wall.second not in s["sec"]
            or wall.minute not in s["min"]
            or wall.hour not in s["hour"]
            or wall.month not in s["month"]
        ):
            return False
        dom_ok = self.dom_any or self._dom_ok(wall)
        dow_ok = self.dow_any or self._dow_ok(wall)
        if self.day_or:
            return dom_ok or dow_ok
        return dom_ok and dow_ok


# -- rrule ---------------------------------------------------------------------


class RRuleReference:
    """dateutil's wall occurrences from DTSTART (COUNT, local UNTIL its own) in a window."""

    def __init__(self, rule: str, dtstart: datetime, lo: datetime, hi: datetime) -> None:
        parts = dict(p.split("=", 1) for p in rule.split(";"))
        self.until_utc: datetime | None = None
        until = parts.get("UNTIL")
        if until is not None and until.endswith("Z"):
            self.until_utc = datetime.strptime(until, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            del parts["UNTIL"]
        elif until is not None and "T" not in until:
            parts["UNTIL"] = until + "T235959"  # a date: its whole day
        occurrences = rrulestr(";".join(f"{k}={v}" for k, v in parts.items()), dtstart=dtstart)
        self.walls = set(occurrences.between(lo, hi, inc=True))
        self.frequent = parts["FREQ"] in ("HOURLY", "MINUTELY", "SECONDLY")

    def matches(self, wall: datetime) -> bool:
        return wall in self.walls


# -- the §3 scan ----------------------------------------------------------------


class Matcher:
    frequent: bool

    def matches(self, wall: datetime) -> bool: ...


def reference_fires(
    ref: Matcher, zone: ZoneInfo, after: datetime, until: datetime, step: timedelta
) -> list[datetime]:
    """Fires in (after, until], scanning UTC at `step` (a minute, or a second)."""
    fires: set[datetime] = set()
    u = after.replace(second=0, microsecond=0) if step == MINUTE else after.replace(microsecond=0)
    before_local = (u - step).astimezone(zone) if u > after else u.astimezone(zone)
    if u <= after:
        u += step
    while u <= until:
        local = u.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        if ref.matches(wall) and (ref.frequent or local.fold == 0):
            fires.add(u)
        before, now = before_local.utcoffset(), local.utcoffset()
        assert before is not None and now is not None
        if not ref.frequent and now > before:  # spring forward: a gap before u
            gap_wall = before_local.replace(tzinfo=None) + step
            while gap_wall < wall:
                if ref.matches(gap_wall):
                    fires.add(u)
                    break
                gap_wall += step
        before_local = local
        u += step
    return sorted(fires)


# -- random cases ----------------------------------------------------------------

ZONES = sorted(available_timezones() - {"Factory", "localtime"})


@cache
def transitions(zone_name: str, year: int) -> tuple[datetime, ...]:
    """UTC instants (to the minute) where the zone's offset changes within the year."""
    zone = ZoneInfo(zone_name)
    found = []
    u = datetime(year, 1, 1, tzinfo=UTC)
    prev = u.astimezone(zone).utcoffset()
    while u.year == year:
        nxt = u + timedelta(hours=3)
        off = nxt.astimezone(zone).utcoffset()
        if off != prev:
            m = u
            while m.astimezone(zone).utcoffset() == prev:
                m += MINUTE
            found.append(m)
            prev, u = m.astimezone(zone).utcoffset(), m
        else:
            u = nxt
    return tuple(found)


def _number(rng: random.Random, low: int, high: int, names: list[str] | None = None) -> str:
    value = rng.randint(low, high)
    roll = rng.random()
    if names and roll < 0.3 and (low == 1 or value < 7):
        text = names[value - 1 if low == 1 else value % 7]
        return text.upper() if rng.random() < 0.5 else text.capitalize()
    if roll < 0.45 and value < 10:
        return f"0{value}"  # a leading zero
    return str(value)


def _item(rng: random.Random, field: str, near: tuple[int, int] | None = None) -> str:
    low, high, names = BOUNDS[field]
    if field == "dow":
        high = 7
    if near is not None and rng.random() < 0.6:
        low, high = near
    kind = rng.random()
    if kind < 0.35:
        return _number(rng, low, high, names)
    if kind < 0.45:  # a one-value range spelled two ways
        value = rng.randint(low, min(high, 6) if names == DAYS else high)
        a = _spell(value, field, rng)
        b = _spell(value, field, rng)
        return f"{a}-{b}" + (f"/{rng.randint(2, 3)}" if rng.random() < 0.3 else "")
    if kind < 0.7:
        a, b = _number(rng, low, high, names), _number(rng, low, high, names)
        wraps = _value(a, field) > _value(b, field)
        step = f"/{rng.randint(2, 7)}" if rng.random() < 0.3 and not wraps else ""
        return f"{a}-{b}{step}"
    if kind < 0.8:
        return f"*/{rng.randint(2, 20)}"
    if kind < 0.88:
        return f"{_number(rng, low, high, names)}/{rng.randint(2, 20)}"
    return "*"


def _spell(value: int, field: str, rng: random.Random) -> str:
    _, _, names = BOUNDS[field]
    if names and rng.random() < 0.5:
        return names[value - 1 if field == "month" else value % 7]
    return f"0{value}" if value < 10 and rng.random() < 0.5 else str(value)


def _field(rng: random.Random, field: str, near: tuple[int, int] | None = None) -> str:
    return ",".join(_item(rng, field, near) for _ in range(rng.choice((1, 1, 1, 2, 3))))


def random_cron(rng: random.Random, dst_hours: tuple[int, int]) -> str:
    seconds = rng.random() < 0.25
    minute = rng.choice(["0", "30", "*/15", "h", "h/20", _field(rng, "min"), _field(rng, "min")])
    hour = rng.choice(["*", "h", _field(rng, "hour", dst_hours), _field(rng, "hour", dst_hours)])
    dom, dow = "*", "*"
    day = rng.random()
    if day < 0.2:
        dom = rng.choice(["L", "LW", "15W", "W1", "31W", "1W", "h", "L,15", _field(rng, "dom")])
    elif day < 0.4:
        dow = rng.choice(
            ["MON#2", "sun#1", "5L", "FRIL", "1#5", "h", "MON#1,FRI", _field(rng, "dow")]
        )
    elif day < 0.5:
        dom, dow = _field(rng, "dom"), _field(rng, "dow")
    elif day < 0.6:
        dom, dow = rng.choice(["*/2", "?"]), _field(rng, "dow")
    month = _field(rng, "month") if rng.random() < 0.25 else "*"
    fields = [minute, hour, dom, month, dow]
    if seconds:
        fields.insert(0, rng.choice(["0", "*/15", "h", "7,37", _field(rng, "sec")]))
    return " ".join(fields)


_WEEKDAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


def random_rrule(rng: random.Random, dst_hours: tuple[int, int], centre: datetime) -> str:
    freq = rng.choice(["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "DAILY", "HOURLY", "MINUTELY"])
    freq = "SECONDLY" if rng.random() < 0.05 else freq
    parts = [f"FREQ={freq}"]
    if rng.random() < 0.3:
        parts.append(f"INTERVAL={rng.randint(2, 5) if freq != 'SECONDLY' else rng.randint(7, 45)}")
    if rng.random() < 0.2:
        parts.append("BYMONTH=" + ",".join(map(str, sorted(rng.sample(range(1, 13), 4)))))
    if rng.random() < 0.15:
        parts.append(f"BYMONTHDAY={rng.choice(['-1', '1', '15', '1,15', '-1,28', '31'])}")
    elif rng.random() < 0.3:
        days = rng.sample(_WEEKDAYS, rng.randint(1, 3))
        if freq in ("MONTHLY", "YEARLY") and rng.random() < 0.5:
            days = [f"{rng.choice([-1, 1, 2, -2])}{d}" for d in days]
        parts.append("BYDAY=" + ",".join(days))
    if freq not in ("HOURLY", "MINUTELY", "SECONDLY") and rng.random() < 0.7:
        low, high = dst_hours
        hours = sorted({rng.randint(low, high) for _ in range(rng.randint(1, 3))})
        parts.append("BYHOUR=" + ",".join(map(str, hours)))
    if freq != "SECONDLY" and rng.random() < 0.4:
        parts.append(f"BYMINUTE={rng.choice(['0', '30', '15,45', '0,20,40'])}")
    if freq == "MINUTELY" and rng.random() < 0.2:
        parts.append("BYSECOND=0,30")
    if rng.random() < 0.1 and any(p.startswith(("BYHOUR", "BYMINUTE", "BYDAY")) for p in parts):
        parts.append(f"BYSETPOS={rng.choice(['1', '-1'])}")
    parts.extend(_count_or_until(rng, centre))
    rng.shuffle(parts)
    return ";".join(parts)


def _count_or_until(rng: random.Random, centre: datetime) -> list[str]:
    roll = rng.random()
    if roll < 0.25:
        return [f"COUNT={rng.randint(1, 40)}"]
    if roll < 0.5:
        until = centre + timedelta(minutes=rng.randint(-24 * 60, 24 * 60))
        style = rng.random()
        if style < 0.4:
            return [f"UNTIL={until:%Y%m%dT%H%M00}Z"]
        if style < 0.8:
            return [f"UNTIL={until:%Y%m%dT%H%M00}"]  # read as local wall time
        return [f"UNTIL={until:%Y%m%d}"]
    return []


@dataclass(frozen=True)
class Case:
    kind: str  # "cron" or "rrule"
    text: str
    zone: str
    after: datetime
    until: datetime
    start: datetime | None  # rrule: DTSTART is its local wall time

    def __str__(self) -> str:
        start = f" start={self.start.isoformat()}" if self.start else ""
        return (
            f"{self.kind} {self.text!r} in {self.zone} over ({self.after.isoformat()},"
            f" {self.until.isoformat()}]{start}"
        )


def random_case(
    rng: random.Random, zones: list[str] = ZONES, years: tuple[int, int] = (2000, 2035)
) -> Case:
    zone_name = rng.choice(zones)
    zone = ZoneInfo(zone_name)
    year = rng.randint(*years)
    moments = transitions(zone_name, year)
    where = rng.random()
    if moments and where < 0.5:
        centre = rng.choice(moments)
    elif where < 0.7:  # a month's last day, late: L, LW, W and # live there
        month = rng.randint(1, 12)
        last = calendar.monthrange(year, month)[1]
        centre = datetime(year, month, last, 22, tzinfo=zone).astimezone(UTC)
    else:
        centre = datetime(year, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 525_000))
    wall = centre.astimezone(zone)
    dst_hours = (max(0, wall.hour - 2), min(23, wall.hour + 2))
    if rng.random() < 0.55:
        text = random_cron(rng, dst_hours)
        width = timedelta(hours=2 if len(text.split()) == 6 else 27)
        after = centre - rng.randint(0, int(width.total_seconds())) * SECOND
        after += timedelta(microseconds=rng.choice([0, 0, 250_000]))
        return Case("cron", text, zone_name, after, after + width, None)
    text = random_rrule(rng, dst_hours, wall.replace(tzinfo=None))
    fine = "SECONDLY" in text or "BYSECOND" in text
    width = timedelta(minutes=20 if fine else 27 * 60)  # SECONDLY costs the engine ~1 ms a fire
    after = centre - rng.randint(0, int(width.total_seconds())) * SECOND
    back = {"SECONDLY": 1, "MINUTELY": 48, "HOURLY": 24 * 20}.get(
        text.split("FREQ=")[1].split(";")[0]
    )
    hours_back = rng.randint(0, back or 24 * 800)
    start = (after - timedelta(hours=hours_back)).replace(second=0, microsecond=0)
    if fine:
        start = start.replace(second=rng.randint(0, 59))
    return Case("rrule", text, zone_name, after, after + width, start)


def engine_fires(case: Case) -> list[datetime] | None:
    """The engine's fires, or None when validation refuses the case (a one-line ValueError)."""
    zone = ZoneInfo(case.zone)
    spec = Cron(case.text) if case.kind == "cron" else RRule(case.text)
    try:
        check_spec(spec, zone, "ref", case.start)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc), case
        return None
    schedule = Schedule("ref", spec, "t", timezone=zone, start=case.start)
    return list(fires_between(schedule, case.after, case.until))


def expected_fires(case: Case) -> list[datetime]:
    zone = ZoneInfo(case.zone)
    if case.kind == "cron":
        step = SECOND if len(case.text.split()) == 6 else MINUTE
        return reference_fires(CronReference(case.text), zone, case.after, case.until, step)
    assert case.start is not None
    dtstart = case.start.astimezone(zone).replace(tzinfo=None)
    lo = case.after.astimezone(zone).replace(tzinfo=None) - timedelta(hours=4)
    ref = RRuleReference(
        case.text, dtstart, lo, lo + (case.until - case.after) + timedelta(hours=8)
    )
    fine = "SECONDLY" in case.text or "BYSECOND" in case.text
    found = reference_fires(ref, zone, case.after, case.until, SECOND if fine else MINUTE)
    return [f for f in found if f >= case.start and (ref.until_utc is None or f <= ref.until_utc)]


def check_case(case: Case, got: list[datetime]) -> str | None:
    """None when the engine's fires `got` are the reference's; else how they differ."""
    want = expected_fires(case)
    if got == want:
        return None
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    return f"{case}: missing {[str(m) for m in missing]}, extra {[str(e) for e in extra]}"


def run_seed(seed: int, count: int, zones: int | None = None) -> tuple[list[str], int]:
    """(mismatches, cases the engine refused) over `count` cases drawn from `seed`.

    `zones` draws that many zones and four years for the seed (warm caches:
    CI speed); None draws from every zone and 2000-2035 each time.
    """
    rng = random.Random(seed)
    sample = rng.sample(ZONES, zones) if zones else ZONES
    first = rng.randint(2000, 2032)
    years = (first, first + 3) if zones else (2000, 2035)
    problems, refused = [], 0
    for _ in range(count):
        case = random_case(rng, sample, years)
        got = engine_fires(case)
        if got is None:
            refused += 1
            continue
        problem = check_case(case, got)
        if problem is not None:
            problems.append(problem)
    return problems, refused
