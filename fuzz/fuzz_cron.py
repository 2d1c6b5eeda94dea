"""Fuzz the cron parser and the timing engine (not collected by CI).

Any exception other than ValueError from `normalize_cron` / `check_spec`,
or any exception at all from `next_after` on a spec that passed
`check_spec`, is a bug; so is a next instant that is not strictly later.

    .venv/bin/python -m pytest fuzz/fuzz_cron.py -p no:cacheprovider   # a quick pass
    .venv/bin/python fuzz/fuzz_cron.py --seconds 180                    # a long run
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from fuzz_support import EXAMPLES, ZONES, run_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beatd import timing
from beatd.codec import Defaults, schedule_from_table
from beatd.errors import ConfigError
from beatd.model import Cron, Schedule, Source

_NAMES = ["jan", "feb", "dec", "mon", "fri", "sun", "sat", "MON", "Jan"]
_ATOMS = st.one_of(
    st.sampled_from(["*", "?", "L", "W", "H", "LW", "l", "w", "h", "R", "0L", "5L", "FRIL"]),
    st.integers(-2, 100).map(str),
    st.sampled_from(_NAMES),
    st.integers(0, 40).map(lambda n: f"{n}W"),
    st.builds(lambda d, k: f"{d}#{k}", st.integers(-1, 8), st.integers(-1, 6)),
    st.builds(lambda a, b: f"H({a}-{b})", st.integers(-1, 70), st.integers(-1, 70)),
    st.text(alphabet="0123456789*/-,#LWH?()x ", min_size=1, max_size=6),
)


@st.composite
def _item(draw: st.DrawFn) -> str:
    atom = draw(_ATOMS)
    if draw(st.booleans()):
        atom = f"{atom}-{draw(_ATOMS)}"
    if draw(st.integers(0, 3)) == 0:
        atom = f"{atom}/{draw(st.integers(-1, 100))}"
    return atom


_FIELD = st.lists(_item(), min_size=1, max_size=3).map(",".join)
_MACROS = st.sampled_from(
    ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually", "@reboot"]
)
CRONS = st.one_of(
    st.lists(_FIELD, min_size=5, max_size=6).map(" ".join),
    st.lists(_FIELD, min_size=0, max_size=8).map(" ".join),
    _MACROS,
    st.text(max_size=30),
)
INSTANTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
)


def _check_cron(expr: str, zone_name: str, name: str, after: datetime) -> None:
    zone = ZoneInfo(zone_name)
    try:
        normal = timing.normalize_cron(expr)
        timing.check_spec(Cron(normal), zone, name)
    except ValueError as exc:
        text = str(exc)
        assert text and "\n" not in text, f"error is not one line: {text!r}"
        return
    schedule = Schedule(name=name, spec=Cron(normal), task="t", timezone=zone)
    first = timing.next_after(schedule, after)
    if first is None:
        return
    assert first > after, (expr, after, first)
    assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
    second = timing.next_after(schedule, first)
    assert second is None or second > first, (expr, first, second)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    expr=CRONS,
    zone=st.sampled_from(ZONES),
    name=st.text(min_size=1, max_size=8),
    after=INSTANTS,
)
def test_cron_parser_and_next_after(expr: str, zone: str, name: str, after: datetime) -> None:
    _check_cron(expr, zone, name, after)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(expr=CRONS, zone=st.sampled_from(ZONES))
def test_cron_through_the_codec_only_config_error(expr: str, zone: str) -> None:
    table = {"cron": expr, "task": "t", "timezone": zone}
    try:
        schedule_from_table("fuzz", table, Defaults(), Source.FILE)
    except ConfigError as exc:
        assert all(p and "\n" not in p for p in exc.problems), exc.problems


RRULE_PARTS = st.sampled_from(
    [
        "FREQ=SECONDLY",
        "FREQ=MINUTELY",
        "FREQ=HOURLY",
        "FREQ=DAILY",
        "FREQ=WEEKLY",
        "FREQ=MONTHLY",
        "FREQ=YEARLY",
        "FREQ=NOPE",
        "INTERVAL=0",
        "INTERVAL=3",
        "INTERVAL=-1",
        "COUNT=2",
        "COUNT=0",
        "UNTIL=19991231T000000Z",
        "UNTIL=garbage",
        "BYDAY=-1FR",
        "BYDAY=MO,TU",
        "BYDAY=9ZZ",
        "BYMONTHDAY=31",
        "BYMONTHDAY=-1",
        "BYMONTHDAY=0",
        "BYMONTH=2",
        "BYMONTH=13",
        "BYHOUR=2",
        "BYHOUR=25",
        "BYMINUTE=30",
        "BYSECOND=61",
        "BYSETPOS=-1",
        "BYWEEKNO=53",
        "BYYEARDAY=366",
        "WKST=SU",
        "",
        ";",
        "=",
    ]
)
RRULES = st.one_of(
    st.lists(RRULE_PARTS, min_size=1, max_size=4).map(";".join),
    st.text(max_size=30),
)


@settings(
    max_examples=max(EXAMPLES // 4, 20),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(rule=RRULES, zone=st.sampled_from(ZONES), after=INSTANTS)
def test_rrule_through_the_codec_only_config_error(rule: str, zone: str, after: datetime) -> None:
    table = {"rrule": rule, "task": "t", "timezone": zone}
    try:
        schedule = schedule_from_table("fuzz", table, Defaults(), Source.FILE)
    except ConfigError as exc:
        assert all(p and "\n" not in p for p in exc.problems), exc.problems
        return
    found = timing.next_after(schedule, after)
    assert found is None or found > after


if __name__ == "__main__":
    run_for(
        [
            test_cron_parser_and_next_after,
            test_cron_through_the_codec_only_config_error,
            test_rrule_through_the_codec_only_config_error,
        ]
    )
