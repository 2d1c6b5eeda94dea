"""Fuzz the config loader (not collected by CI).

Random TOML documents (as tomllib would return them), random TOML text and
random BEATD_* environment values go through the loader. Anything but a
ConfigError whose problems are each one non-empty line is a bug; so is a
schedule that loads but does not survive its own canonical table
(`schedule_to_table` -> `schedule_from_table`), or whose next fire raises.

    .venv/bin/python -m pytest fuzz/fuzz_config.py        # a quick pass
    .venv/bin/python fuzz/fuzz_config.py --seconds 180     # a long run
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fuzz_support import EXAMPLES, ZONES, run_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beatd import timing
from beatd.codec import KEYS, schedule_from_table, schedule_to_table
from beatd.config import BEATD_KEYS, Settings, load_settings, settings_from_document
from beatd.errors import ConfigError
from beatd.model import Source

_OFFSETS = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_DATETIMES = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_OFFSETS),
)
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    _DATETIMES,
    st.dates(),
    st.times(),
)
_TOML_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_DURATIONS = st.one_of(
    st.sampled_from(
        ["90s", "5m", "1h30m", "2d", "1w", "0", "0s", "-5s", "1.5", "1e3", "s", "", " 1 h ", "3"]
    ),
    st.builds(lambda n, u: f"{n}{u}", st.integers(-5, 10**12), st.sampled_from("wdhms")),
    st.integers(-(2**40), 2**40),
    st.floats(),
)
_INSTANTS = st.one_of(
    _DATETIMES,
    _DATETIMES.map(lambda d: d.isoformat()),
    st.sampled_from(["2026-12-01", "2026-12-01T09:00:00Z", "0001-01-01T00:00:00", "nope", ""]),
    st.dates(),
    st.times(),
)
_CRONS = st.one_of(
    st.sampled_from(
        [
            "* * * * *",
            "*/5 9-17 * * MON-FRI",
            "0 0 30 2 *",
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 * * 5#3",
            "H H * * *",
            "* * * * * *",
            "@daily",
            "@reboot",
            "61 * * * *",
            "",
        ]
    ),
    st.text(alphabet="0123456789*/-,#LWH? ", max_size=20),
)
_PLAUSIBLE: dict[str, Any] = {
    "cron": _CRONS,
    "every": _DURATIONS,
    "rrule": st.sampled_from(
        ["FREQ=DAILY", "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18", "FREQ=NOPE", "RRULE:FREQ=HOURLY", ""]
    ),
    "at": _INSTANTS,
    "anchor": _INSTANTS,
    "start": _INSTANTS,
    "end": _INSTANTS,
    "jitter": _DURATIONS,
    "expires": _DURATIONS,
    "grace": _DURATIONS,
    "timezone": st.one_of(
        st.sampled_from(ZONES), st.text(max_size=12), st.just("../../etc/passwd")
    ),
    "misfire": st.sampled_from(["skip", "coalesce", "all", "ALL", "nope"]),
    "format": st.sampled_from(["celery", "json", "yaml"]),
    "priority": st.integers(-5, 300),
    "max_fires": st.integers(-2, 2**70),
    "task": st.text(max_size=30),
    "queue": st.text(max_size=10),
}


def _nested(depth: int) -> Any:
    value: Any = []
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


_DEEP = st.integers(20, 3000).map(_nested)
_PLAUSIBLE.update(
    args=st.lists(_DEEP, max_size=1), kwargs=_DEEP.map(lambda v: {"deep": v}), headers=_DEEP
)


def _value_for(key: str) -> Any:
    plausible = _PLAUSIBLE.get(key)
    return _TOML_VALUES if plausible is None else st.one_of(plausible, _TOML_VALUES)


@st.composite
def schedule_tables(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=7, unique=True))
    kind = draw(st.sampled_from(["cron", "every", "rrule", "at", None]))
    if kind is not None and kind not in keys:
        keys.append(kind)
    if draw(st.integers(0, 9)) and "task" not in keys:
        keys.append("task")
    table = {key: draw(_value_for(key)) for key in keys}
    if draw(st.integers(0, 9)) == 0:
        table[draw(st.text(max_size=8))] = draw(_TOML_VALUES)
    return table


_BEATD_VALUES: dict[str, Any] = {
    "database": st.sampled_from(
        [
            "sqlite:///beatd.db",
            "postgresql://u:pw@h/db",
            "nope://x",
            "sqlite://",
            "",
            "://",
            "postgresql://u:pw@h:99999/db",
        ]
    ),
    "broker": st.sampled_from(
        ["stdout://", "amqp://g:g@h:0/", "amqp://h:x/", "redis://h", "", "amqp://[::1/"]
    ),
    "timezone": st.sampled_from(ZONES),
    "lease": _DURATIONS,
    "format": st.sampled_from(["celery", "json", "xml"]),
    "http": st.one_of(
        st.sampled_from(["127.0.0.1:9464", ":0", "9464", "[::1]:80", "x"]), st.text()
    ),
    "log_format": st.sampled_from(["text", "json", "yaml"]),
    "instance_id": st.text(max_size=10),
}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(list(BEATD_KEYS)), max_size=4, unique=True))
        doc["beatd"] = {k: draw(st.one_of(_BEATD_VALUES[k], _TOML_VALUES)) for k in keys}
    doc["schedules"] = draw(
        st.one_of(
            st.dictionaries(st.text(max_size=12), schedule_tables(), max_size=4),
            _TOML_VALUES,
        )
    )
    if draw(st.integers(0, 7)) == 0:
        doc[draw(st.text(max_size=8))] = draw(_TOML_VALUES)
    return doc


_ENV = st.dictionaries(
    st.sampled_from(["BEATD_DATABASE", "BEATD_BROKER"]),
    st.one_of(st.text(max_size=30), st.sampled_from(["amqp://u:p@h:70000/", "sqlite:///x.db"])),
    max_size=2,
)


def _check_loaded(found: Settings) -> None:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    for schedule in found.schedules:
        table = schedule_to_table(schedule)
        again = schedule_from_table(schedule.name, table, found.defaults, Source.FILE)
        assert again == schedule, (schedule, table, again)
        nxt = timing.next_after(schedule, now)
        assert nxt is None or nxt > now


def _one_line_problems(exc: ConfigError) -> None:
    assert exc.problems, "a ConfigError with no problem"
    for problem in exc.problems:
        assert problem.strip() and "\n" not in problem, f"not one line: {problem!r}"


_FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@_FUZZ
@given(doc=documents(), env=_ENV)
def test_documents_load_or_raise_config_error(doc: dict[str, Any], env: dict[str, str]) -> None:
    try:
        found = settings_from_document(doc, env)
    except ConfigError as exc:
        _one_line_problems(exc)
        return
    _check_loaded(found)


_VALID = """\
[beatd]
database = "sqlite:///beatd.db"
timezone = "Europe/Berlin"
lease = "10s"

[schedules.nightly]
cron = "30 2 * * *"
task = "reports.tasks.nightly"
kwargs = { full = true, depth = [1, 2.5, "x"] }
start = 2026-01-01T00:00:00
misfire = "all"

[schedules."quoted name"]
every = "1h30m"
task = "t"
args = [1, "two", { three = 3 }]
"""


@st.composite
def toml_texts(draw: st.DrawFn) -> str:
    text = _VALID
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(
            st.one_of(
                st.text(max_size=6),
                st.sampled_from(['"', "'", "[", "]", "=", "\n", "{", "}", "\\", "\x00", "é"]),
            )
        )
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 10)) :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    return text


@_FUZZ
@given(text=toml_texts(), raw=st.booleans(), junk=st.binary(max_size=8))
def test_toml_text_loads_or_raises_config_error(text: str, raw: bool, junk: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "beatd.toml"
        data = text.encode("utf-8", "surrogatepass")
        path.write_bytes(data + junk if raw else data)
        try:
            found = load_settings(path, env={})
        except ConfigError as exc:
            _one_line_problems(exc)
            return
    _check_loaded(found)


if __name__ == "__main__":
    run_for(
        [test_documents_load_or_raise_config_error, test_toml_text_loads_or_raises_config_error]
    )
