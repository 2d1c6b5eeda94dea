"""The wall-time walkers against independent iterators, with no zones involved.

- cron: our matcher against croniter's own naive-time iterator for the syntax
  the DST reference does not cover (L, W, #, H, names). One day field stays
  `*` so croniter's day-or quirks do not enter; the Vixie rule is checked by
  the reference and the table tests.
- rrule: re-anchored DTSTART against dateutil iterating from the original
  DTSTART; and rrule schedules across DST against the §3 rule applied to
  dateutil's naive occurrences.
"""

from __future__ import annotations

import ast
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from dateutil.rrule import rrulestr
from hypothesis import given, settings
from hypothesis import strategies as st

import beatd.timing
from beatd.model import RRule, Schedule
from beatd.timing import fires_between
from beatd.timing.cron import compile_cron
from beatd.timing.rrules import RRuleSource

LONG = os.environ.get("BEATD_LONG") == "1"
SECOND = timedelta(seconds=1)

MINUTE = st.sampled_from(["0", "30", "*/15", "5-10", "H", "H/20", "59", "0,30"])
HOUR = st.sampled_from(["0", "*", "9-17", "H", "*/6", "23", "1,13"])
DOM = st.sampled_from(["L", "15W", "1W", "31W", "L,15", "1-7", "29", "31", "*/10", "W3"])
MONTH = st.sampled_from(["*", "*", "JAN-MAR", "feb", "2,4,6,9,11", "*/3", "DEC"])
DOW = st.sampled_from(["MON-FRI", "5#2", "L5", "1#1", "sun#5", "0#5,6#1", "SAT,sun", "L0", "2"])


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    dom, dow = (draw(DOM), "*") if draw(st.booleans()) else ("*", draw(DOW))
    fields = [draw(MINUTE), draw(HOUR), dom, draw(MONTH), dow]
    if draw(st.booleans()):
        fields.insert(0, draw(st.sampled_from(["0", "*/20", "H", "7,37"])))
    return " ".join(fields)


@settings(max_examples=600 if LONG else 150, deadline=None)
@given(
    expr=cron_expressions(),
    name=st.sampled_from(["a", "nightly", "report-42"]),
    start=st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1)),
)
def test_cron_walk_matches_croniter(expr: str, name: str, start: datetime) -> None:
    start = start.replace(microsecond=0)
    theirs = croniter(
        expr,
        start,
        ret_type=datetime,
        second_at_beginning=True,
        hash_id=name.encode(),
        max_years_between_matches=400,
    )
    ours = compile_cron(expr, name)
    wall = start
    for _ in range(12):
        try:
            expected = theirs.get_next()
        except CroniterBadDateError:
            expected = None
        found = ours.next_wall(wall + SECOND)
        assert found == expected
        if found is None:
            break
        wall = found


RULES = st.sampled_from(
    [
        "FREQ=MINUTELY;INTERVAL=7",
        "FREQ=MINUTELY;BYSECOND=0,30;BYHOUR=2,3",
        "FREQ=SECONDLY;INTERVAL=45",
        "FREQ=HOURLY;INTERVAL=5;BYMINUTE=15,45",
        "FREQ=DAILY;INTERVAL=3;BYHOUR=2;BYMINUTE=30",
        "FREQ=DAILY;BYSETPOS=-1;BYHOUR=1,2,3",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR",
        "FREQ=WEEKLY;INTERVAL=3",
        "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18",
        "FREQ=MONTHLY;INTERVAL=5",
        "FREQ=MONTHLY;BYMONTHDAY=-1,15",
        "FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU;BYHOUR=1",
        "FREQ=YEARLY;INTERVAL=2",
        "FREQ=MONTHLY;INTERVAL=7;BYSETPOS=2;BYDAY=MO,TU,WE,TH,FR",
    ]
)


@settings(max_examples=300 if LONG else 80, deadline=None)
@given(
    rule=RULES,
    dtstart=st.datetimes(datetime(1990, 1, 1), datetime(2030, 1, 1)),
    ahead=st.integers(0, 3000),
    unit=st.sampled_from([timedelta(seconds=53), timedelta(minutes=13), timedelta(days=5)]),
)
def test_reanchored_rrule_matches_dateutil(
    rule: str, dtstart: datetime, ahead: int, unit: timedelta
) -> None:
    dtstart = dtstart.replace(microsecond=0)
    lo = dtstart + ahead * unit
    if "MINUTELY" in rule or "SECONDLY" in rule:
        lo = dtstart + ahead * timedelta(seconds=7)  # keep dateutil's walk from DTSTART short
    source = RRuleSource(rule, dtstart)
    reference = rrulestr(rule, dtstart=dtstart)
    found = source.next_wall(lo)
    expected = reference.after(lo, inc=True)
    assert found == expected
    if found is not None:
        assert source.next_wall(found + SECOND) == reference.after(found)


ZONES = [ZoneInfo(z) for z in ("America/New_York", "Australia/Lord_Howe", "Europe/Berlin")]
DST_RULES = st.sampled_from(
    [
        "FREQ=HOURLY",
        "FREQ=MINUTELY;INTERVAL=20",
        "FREQ=HOURLY;BYMINUTE=15,45",
        "FREQ=DAILY;BYHOUR=1,2;BYMINUTE=30",
        "FREQ=DAILY;BYHOUR=2;BYMINUTE=15,45",
        "FREQ=WEEKLY;BYDAY=SU;BYHOUR=1,2,3;BYMINUTE=0,30",
    ]
)


def _transitions(zone: ZoneInfo) -> list[datetime]:
    found = []
    u = datetime(2025, 1, 1, tzinfo=UTC)
    prev = u.astimezone(zone).utcoffset()
    while u.year < 2027:
        off = u.astimezone(zone).utcoffset()
        if off != prev:
            found.append(u)
            prev = off
        u += timedelta(minutes=30)
    return found


@settings(max_examples=300 if LONG else 60, deadline=None)
@given(data=st.data(), rule=DST_RULES, zone=st.sampled_from(ZONES))
def test_rrule_across_dst_follows_the_rule(data: st.DataObject, rule: str, zone: ZoneInfo) -> None:
    """§3 applied to dateutil's naive occurrences, minute by minute."""
    moment = data.draw(st.sampled_from(_transitions(zone)))
    after = moment - timedelta(minutes=data.draw(st.integers(0, 26 * 60)))
    until = after + timedelta(hours=27)
    naive = rrulestr(rule, dtstart=datetime(2024, 12, 30))
    frequent = rule.startswith(("FREQ=HOURLY", "FREQ=MINUTELY"))
    lo_wall = after.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)
    walls = set(naive.between(lo_wall, lo_wall + timedelta(hours=33), inc=True))
    expected = []
    u = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while u <= until:
        local = u.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        if wall in walls and (frequent or local.fold == 0):
            expected.append(u)
        prev_local = (u - timedelta(minutes=1)).astimezone(zone)
        assert local.utcoffset() is not None and prev_local.utcoffset() is not None
        if not frequent and local.utcoffset() > prev_local.utcoffset():  # type: ignore[operator]
            gap = prev_local.replace(tzinfo=None) + timedelta(minutes=1)
            if any(gap <= w < wall for w in walls) and u not in expected:
                expected.append(u)
        u += timedelta(minutes=1)
    schedule = Schedule(
        "r", RRule(rule), "t", timezone=zone, start=datetime(2024, 12, 30, tzinfo=zone)
    )
    assert list(fires_between(schedule, after, until)) == expected


def _private(node: ast.AST) -> str | None:
    """`obj._name` (obj not self or cls) or `getattr(obj, "_name")`: the name, else None."""
    if isinstance(node, ast.Attribute):
        owner = node.value
        if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
            name = node.attr
        else:
            return None
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
    ):
        name = str(node.args[1].value)
    else:
        return None
    return name if name.startswith("_") and not name.startswith("__") else None


def test_the_engine_uses_only_public_dependency_apis() -> None:
    """No private attribute of another object: croniter's `_expand` and dateutil's
    `_byhour` are gone, so a new croniter or dateutil release cannot silently change a
    fire time through them (pyproject bounds both to the versions tested)."""
    root = Path(beatd.timing.__file__).parent
    found = [
        f"{path.name}:{node.lineno} {_private(node)}"
        for path in sorted(root.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if _private(node)
    ]
    assert not found
