"""Bad input everywhere: the TOML file, CLI arguments, the Python API, BEATD_* variables.

One table. Each broken input must give exit code 2 (or a BeatdError from the
API) with exactly one clear line per problem (each naming what is wrong), no
traceback, and nothing written: a database that did not exist is not created,
and one that did keeps its row counts. Rows marked `proc` go through a real
`.venv/bin/beatd` subprocess (some through `beatd run`, which must refuse
before it touches anything). A second table lists inputs that look hostile
but are valid (unicode and shell metacharacters in names): they are accepted
and stored verbatim, and nothing runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from beatd.api import Beat
from beatd.cli.main import main
from beatd.errors import BeatdError, ConfigError
from beatd.store.sql import migrate

REPO = Path(__file__).resolve().parent.parent
# The installed console script (.venv/bin/beatd), as a user runs it.
_SCRIPT = Path(sys.executable).with_name("beatd")
BEATD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "beatd.cli.main"]

HEAD = '[beatd]\ndatabase = "{db}"\n'


def sched(body: str, name: str = "a") -> str:
    """A config with one schedule `name` whose table is `body`."""
    return f"{HEAD}[schedules.{name}]\n{body}\n"


def ok_sched(extra: str = "") -> str:
    return sched(f'every = "1m"\ntask = "t"\n{extra}')


@dataclass(frozen=True)
class Bad:
    """One broken input and what beatd must say about it."""

    toml: str | bytes | None = None  # the config file ("{db}": a database that must not appear)
    argv: tuple[str, ...] = ("validate",)  # the command (the file comes with --config)
    env: dict[str, str] = field(default_factory=dict)
    api: Callable[[Beat], Any] | None = None  # instead of argv: a call on a Beat
    lines: int = 1  # problems, one line each
    says: tuple[str, ...] = ()  # fragments the output must contain
    proc: bool = False  # through a real subprocess
    existing: bool = False  # against an existing database (row counts must not change)


TEN_MB_KWARGS = sched('every = "1s"\ntask = "t"\nkwargs = { blob = "' + "x" * 10_000_000 + '" }')


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"k": value}
    return value


def _reversed_backfill(beat: Beat) -> Any:
    return beat.backfill("keep", datetime(2026, 1, 2), datetime(2026, 1, 1))


CASES = [
    # -- the TOML file: syntax ----------------------------------------------------
    pytest.param(
        Bad(toml="[schedules.a\n", says=(":1:", "invalid TOML")), id="toml-unclosed-table"
    ),
    pytest.param(
        Bad(toml=ok_sched('every = "2m"'), says=(":6:", "invalid TOML")),
        id="toml-duplicate-key",
    ),
    pytest.param(Bad(toml=b"\xff\xfe[beatd]\n", says=("not UTF-8",)), id="toml-not-utf8"),
    pytest.param(Bad(toml=b"a = 1\x00\n", says=("invalid TOML",)), id="toml-nul-byte"),
    pytest.param(
        Bad(toml="[schedules.a\n", argv=("run",), proc=True, says=("invalid TOML",)),
        id="toml-broken-run-proc",
    ),
    pytest.param(
        Bad(toml='"\\n" = 1\n', says=("'\\n'", "unknown table")), id="toml-key-with-newline"
    ),
    pytest.param(
        Bad(toml="[schedule.a]\nevery = '1m'\n", says=("did you mean 'schedules'",)),
        id="toml-unknown-table",
    ),
    pytest.param(Bad(toml="schedules = 5\n", says=("[schedules]",)), id="toml-schedules-not-table"),
    # -- impossible crons and rrules -------------------------------------------
    pytest.param(
        Bad(toml=sched('cron = "61 * * * *"\ntask = "t"'), says=("'a'", "cron")),
        id="cron-minute-61",
    ),
    pytest.param(
        Bad(toml=sched('cron = "0 0 30 2 *"\ntask = "t"'), says=("never fires",)), id="cron-feb-30"
    ),
    pytest.param(
        Bad(toml=sched('cron = "* * * *"\ntask = "t"'), says=("5 fields",)), id="cron-4-fields"
    ),
    pytest.param(
        Bad(toml=sched('cron = "* * * * * * *"\ntask = "t"'), says=("found 7",)), id="cron-7-fields"
    ),
    pytest.param(
        Bad(toml=sched('cron = "@reboot"\ntask = "t"'), says=("unknown cron macro",)),
        id="cron-reboot-macro",
    ),
    pytest.param(
        Bad(toml=sched('cron = "*/0 * * * *"\ntask = "t"'), says=("cron",)), id="cron-step-zero"
    ),
    pytest.param(
        Bad(toml=sched('cron = "R * * * *"\ntask = "t"'), says=("random",)), id="cron-random"
    ),
    pytest.param(
        Bad(
            toml=sched('cron = "0 0 * * FUNDAY"\ntask = "t"'),
            says=("cron",),
            proc=True,
            argv=("run",),
        ),
        id="cron-bad-day-run-proc",
    ),
    pytest.param(
        Bad(toml=sched('rrule = "BYDAY=MO"\ntask = "t"'), says=("no FREQ",)), id="rrule-no-freq"
    ),
    pytest.param(
        Bad(toml=sched('rrule = "FREQ=SECONDLY;BYSECOND=61"\ntask = "t"'), says=("BYSECOND",)),
        id="rrule-bysecond-61",  # found by fuzz/fuzz_cron.py: was a TypeError traceback
    ),
    pytest.param(
        Bad(toml=sched('rrule = "FREQ=MONTHLY;INTERVAL=0"\ntask = "t"'), says=("INTERVAL",)),
        id="rrule-interval-0",  # found by fuzz/fuzz_cron.py: was a ZeroDivisionError traceback
    ),
    pytest.param(
        Bad(
            toml=sched('rrule = "FREQ=DAILY;COUNT=3;UNTIL=20270101T000000Z"\ntask = "t"'),
            says=("COUNT and UNTIL",),
        ),
        id="rrule-count-and-until",
    ),
    pytest.param(
        Bad(toml=sched('rrule = "FREQ=YEARLY;INTERVAL=9000"\ntask = "t"'), says=("100 years",)),
        id="rrule-never-within-100-years",
    ),
    pytest.param(
        Bad(
            toml=sched('rrule = "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"\ntask = "t"'), says=("never",)
        ),
        id="rrule-never",
    ),
    # -- zones -------------------------------------------------------------------
    pytest.param(
        Bad(toml=ok_sched('timezone = "Mars/Olympus_Mons"'), says=("unknown time zone",)),
        id="zone-unknown",
    ),
    pytest.param(
        Bad(toml=ok_sched('timezone = "../../../../etc/passwd"'), says=("unknown time zone",)),
        id="zone-path-traversal",
    ),
    pytest.param(
        Bad(toml='[beatd]\ntimezone = "Europe/Berln"\n', says=("did you mean 'Europe/Berlin'",)),
        id="zone-typo-in-beatd",
    ),
    # -- durations ---------------------------------------------------------------
    pytest.param(Bad(toml=sched('every = "0s"\ntask = "t"'), says=("every",)), id="every-zero"),
    pytest.param(Bad(toml=sched("every = -5\ntask = 't'"), says=("every",)), id="every-negative"),
    pytest.param(
        Bad(toml=sched("every = 1.5\ntask = 't'"), says=("whole seconds",)), id="every-fraction"
    ),
    pytest.param(
        Bad(toml=sched('every = "100000000d"\ntask = "t"'), says=("too long",)), id="every-absurd"
    ),
    pytest.param(
        Bad(toml=sched('every = "soon"\ntask = "t"'), says=("duration",)), id="every-garbage"
    ),
    pytest.param(Bad(toml=ok_sched("jitter = -1"), says=("jitter",)), id="jitter-negative"),
    pytest.param(Bad(toml=ok_sched('grace = "0s"'), says=("grace",)), id="grace-zero"),
    pytest.param(
        Bad(toml='[beatd]\nlease = "1s"\n', says=("lease", "at least 2s")), id="lease-too-short"
    ),
    # -- instants ----------------------------------------------------------------
    pytest.param(
        Bad(toml=sched('at = "tomorrow"\ntask = "t"'), says=("ISO-8601",)), id="at-not-iso"
    ),
    pytest.param(
        Bad(toml=sched('at = "2026-12-01"\ntask = "t"'), says=("only a date",)), id="at-date-only"
    ),
    pytest.param(
        Bad(toml=sched('at = "0001-01-01T00:00:00"\ntask = "t"'), says=("out of range",)),
        id="at-year-1",
    ),
    pytest.param(
        Bad(
            toml=ok_sched('start = "2027-01-01T00:00:00Z"\nend = "2026-01-01T00:00:00Z"'),
            says=("end",),
        ),
        id="end-before-start",
    ),
    # -- sizes and payloads --------------------------------------------------------
    pytest.param(Bad(toml=TEN_MB_KWARGS, says=("too large",)), id="kwargs-10MB"),
    pytest.param(
        Bad(toml=TEN_MB_KWARGS, says=("too large",), proc=True, argv=("run",)),
        id="kwargs-10MB-run-proc",
    ),
    pytest.param(Bad(toml=ok_sched('args = "x"'), says=("args", "an array")), id="args-not-array"),
    pytest.param(
        Bad(toml=ok_sched("kwargs = { when = 2026-01-01T00:00:00 }"), says=("as a string",)),
        id="kwargs-toml-datetime",
    ),
    pytest.param(Bad(toml=ok_sched("priority = 300"), says=("priority",)), id="priority-300"),
    pytest.param(Bad(toml=ok_sched("max_fires = 0"), says=("max_fires",)), id="max-fires-zero"),
    pytest.param(
        Bad(
            toml=ok_sched("args = " + "[" * 5000 + "]" * 5000),
            says=("nested too deeply",),
            proc=True,
        ),
        id="toml-array-5000-deep-proc",  # was a RecursionError traceback
    ),
    pytest.param(
        Bad(toml=ok_sched("args = " + "[" * 33 + "]" * 33), says=("args", "32 levels")),
        id="args-33-deep",
    ),
    # -- keys, kinds and names ---------------------------------------------------
    pytest.param(Bad(toml=sched('every = "1m"'), says=("task", "required")), id="task-missing"),
    pytest.param(
        Bad(toml=sched('every = "1m"\ncron = "* * * * *"\ntask = "t"'), says=("only one of",)),
        id="two-kinds",
    ),
    pytest.param(Bad(toml=sched('task = "t"'), says=("needs one of",)), id="no-kind"),
    pytest.param(Bad(toml=ok_sched('cronn = "x"'), says=("did you mean 'cron'",)), id="key-typo"),
    pytest.param(
        Bad(toml=ok_sched('misfire = "al"'), says=("did you mean 'all'",)), id="misfire-typo"
    ),
    pytest.param(Bad(toml=ok_sched('format = "yaml"'), says=("format",)), id="format-yaml"),
    pytest.param(
        Bad(toml=sched('every = "1m"\ntask = "t"', name='"bell\\u0007name"'), says=("printable",)),
        id="name-control-char",
    ),
    pytest.param(
        Bad(toml=sched('every = "1m"\ntask = "t"', name="n" * 201), says=("at most 200",)),
        id="name-too-long",
    ),
    pytest.param(
        Bad(toml=sched('every = "1m"\ntask = "t"', name='" padded"'), says=("whitespace",)),
        id="name-leading-space",
    ),
    pytest.param(
        Bad(toml=sched('every = "1m"\ntask = "t"\nqueue = "q\\u0000"'), says=("queue",)),
        id="queue-nul",
    ),
    pytest.param(
        Bad(
            toml=sched('cron = "61 * * * *"\ntimezone = "Nowhere/Zone"\npriority = -1'),
            lines=4,
            says=("cron", "timezone", "priority", "task"),
        ),
        id="four-problems-four-lines",
    ),
    # -- [beatd] -------------------------------------------------------------------
    pytest.param(Bad(toml='[beatd]\nhttp = "127.0.0.1:0"\n', says=("http",)), id="http-port-0"),
    pytest.param(
        Bad(toml='[beatd]\nlog_format = "xml"\n', says=("log_format",)), id="log-format-xml"
    ),
    pytest.param(
        Bad(toml='[beatd]\ndatabase = "nosuchdb://x/y"\n', says=("unsupported database",)),
        id="database-unknown-dialect",
    ),
    pytest.param(
        Bad(toml='[beatd]\nbroker = "redis://h/"\n', says=("unsupported broker",)),
        id="broker-redis",
    ),
    pytest.param(
        Bad(
            toml='[beatd]\nbroker = "amqp://h:99999/"\n',
            says=("invalid port",),
            proc=True,
            argv=("run",),
        ),
        id="broker-port-run-proc",
    ),
    pytest.param(
        Bad(toml="[beatd]\ncolour = 1\n", says=("[beatd] colour", "unknown key")),
        id="beatd-unknown-key",
    ),
    # -- environment variables -----------------------------------------------------
    pytest.param(
        Bad(toml=HEAD, env={"BEATD_DATABASE": "not a url"}, says=("BEATD_DATABASE",)),
        id="env-database-garbage",
    ),
    pytest.param(
        Bad(
            toml=HEAD,
            env={"BEATD_DATABASE": "oracle+nothing://x"},
            says=("BEATD_DATABASE",),
            proc=True,
            argv=("run",),
        ),
        id="env-database-dialect-run-proc",
    ),
    pytest.param(
        Bad(toml=HEAD, env={"BEATD_BROKER": "redis://h"}, says=("BEATD_BROKER", "unsupported")),
        id="env-broker-redis",
    ),
    pytest.param(
        Bad(toml=HEAD, env={"BEATD_BROKER": "amqp://u:Pw@h:70000/"}, says=("BEATD_BROKER", "port")),
        id="env-broker-port",
    ),
    pytest.param(
        Bad(
            toml=None,
            argv=("list",),
            env={"BEATD_CONFIG": "{tmp}/missing.toml"},
            says=("not found",),
            proc=True,
        ),
        id="env-config-missing-proc",
    ),
    pytest.param(
        Bad(toml=None, env={"BEATD_CONFIG": "{tmp}/broken.toml"}, says=("invalid TOML",)),
        id="env-config-broken",
    ),
    # -- command-line arguments ----------------------------------------------------
    pytest.param(Bad(argv=(), says=("required",)), id="cli-no-command"),
    pytest.param(
        Bad(argv=("validate", "--cron", "a\nb"), says=("a\\nb",)),
        id="cli-arg-with-newline",  # found by fuzz/fuzz_cli.py: was two lines
    ),
    pytest.param(Bad(argv=("frobnicate",), says=("invalid choice",)), id="cli-unknown-command"),
    pytest.param(
        Bad(argv=("--config", "{tmp}", "validate"), says=("a directory",)),
        id="cli-config-is-dir",
    ),
    pytest.param(
        Bad(argv=("add", "x", "--task", "t"), says=("required",), existing=True),
        id="cli-add-no-kind",
    ),
    pytest.param(
        Bad(
            argv=("add", "x", "--cron", "* * * * *", "--every", "5s", "--task", "t"),
            says=("not allowed",),
            existing=True,
        ),
        id="cli-add-two-kinds",
    ),
    pytest.param(
        Bad(
            argv=("add", "x", "--cron", "0 0 31 2 *", "--task", "t"),
            says=("never fires",),
            existing=True,
            proc=True,
        ),
        id="cli-add-impossible-cron-proc",
    ),
    pytest.param(
        Bad(
            argv=("add", "x", "--every", "5s", "--task", "t", "--kwargs", "{bad"),
            says=("--kwargs", "JSON"),
            existing=True,
        ),
        id="cli-add-kwargs-bad-json",
    ),
    pytest.param(
        Bad(
            argv=("add", "x", "--every", "5s", "--task", "t", "--kwargs", "[1]"),
            says=("kwargs", "a table"),
            existing=True,
        ),
        id="cli-add-kwargs-not-object",
    ),
    pytest.param(
        Bad(
            argv=("add", "x", "--every", "5s", "--task", "t", "--priority", "high"),
            says=("--priority",),
            existing=True,
        ),
        id="cli-add-priority-not-int",
    ),
    pytest.param(
        Bad(
            argv=("add", "x", "--every", "5s", "--task", "t", "--colour", "red"),
            says=("unrecognized",),
            existing=True,
        ),
        id="cli-add-unknown-flag",
    ),
    pytest.param(
        Bad(argv=("add", "", "--every", "5s", "--task", "t"), says=("empty",), existing=True),
        id="cli-add-empty-name",
    ),
    pytest.param(
        Bad(argv=("add", "x", "--every", "0.5s", "--task", "t"), says=("every",), existing=True),
        id="cli-add-half-second",
    ),
    pytest.param(
        Bad(
            argv=("add", "x", "--every", "5s", "--task", "t", "--timezone", "Nowhere/City"),
            says=("time zone",),
            existing=True,
        ),
        id="cli-add-unknown-zone",
    ),
    pytest.param(
        Bad(argv=("add", "keep", "--every", "5s", "--task", "t"), says=("keep",), existing=True),
        id="cli-add-existing",
    ),
    pytest.param(
        Bad(
            argv=("add", "owned", "--every", "5s", "--task", "t"),
            says=("declared in",),
            existing=True,
        ),
        id="cli-add-file-owned",
    ),
    pytest.param(
        Bad(argv=("remove", "owned"), says=("declared in",), existing=True),
        id="cli-remove-file-owned",
    ),
    pytest.param(
        Bad(argv=("upcoming", "--limit", "0"), says=("--limit",)), id="cli-upcoming-limit-0"
    ),
    pytest.param(
        Bad(argv=("upcoming", "--limit", "many"), says=("--limit",)), id="cli-upcoming-limit-text"
    ),
    pytest.param(
        Bad(argv=("upcoming", "--after", "yesterday"), says=("--after",)),
        id="cli-upcoming-after-garbage",
    ),
    pytest.param(
        Bad(
            argv=("upcoming", "--after", "2027-01-02T00:00:00Z", "--until", "2027-01-01T00:00:00Z"),
            says=("--until",),
            existing=True,
        ),
        id="cli-upcoming-until-before-after",
    ),
    pytest.param(
        Bad(argv=("history", "--limit", "x"), says=("--limit",), existing=True),
        id="cli-history-limit-text",
    ),
    pytest.param(
        Bad(argv=("history", "--limit", str(2**63)), says=("--limit",), existing=True),
        id="cli-history-limit-2-63",  # found by fuzz/fuzz_cli.py: was an OverflowError traceback
    ),
    pytest.param(
        Bad(
            argv=(
                "backfill",
                "keep",
                "--from",
                "2027-01-02T00:00:00Z",
                "--to",
                "2027-01-01T00:00:00Z",
            ),
            says=("--to",),
            existing=True,
        ),
        id="cli-backfill-reversed",
    ),
    pytest.param(
        Bad(
            argv=("backfill", "keep", "--from", "last week", "--to", "2027-01-01T00:00:00Z"),
            says=("--from",),
            existing=True,
        ),
        id="cli-backfill-bad-iso",
    ),
    pytest.param(
        Bad(
            argv=("add", "x", "--every", "5s", "--task", "t", "--args", "[" * 5000 + "]" * 5000),
            says=("--args", "nested too deeply"),
            existing=True,
        ),
        id="cli-add-args-5000-deep",
    ),
    # -- the Python API --------------------------------------------------------------
    pytest.param(
        Bad(api=lambda b: b.add("x", cron="* * *", task="t"), says=("cron",), existing=True),
        id="api-add-3-field-cron",
    ),
    pytest.param(
        Bad(
            api=lambda b: b.add("x", every="1s", task="t", colour="red"),
            says=("colour",),
            existing=True,
        ),
        id="api-add-unknown-option",
    ),
    pytest.param(
        Bad(api=lambda b: b.add("x", every=timedelta(0), task="t"), says=("every",), existing=True),
        id="api-add-zero-timedelta",
    ),
    pytest.param(
        Bad(
            api=lambda b: b.add("x", every="1s", task="t", args=[object()]),
            says=("JSON",),
            existing=True,
        ),
        id="api-add-args-not-json",
    ),
    pytest.param(
        Bad(
            api=lambda b: b.add("x", every="1s", task="t", kwargs={"k": "v" * 100_000}),
            says=("too large",),
            existing=True,
        ),
        id="api-add-kwargs-100KB",
    ),
    pytest.param(
        Bad(
            api=lambda b: b.add("x", every="1s", task="t", kwargs=_deep(100_000)),
            says=("32 levels",),
            existing=True,
        ),
        id="api-add-kwargs-100000-deep",
    ),
    pytest.param(
        Bad(api=lambda b: b.add(5, every="1s", task="t"), says=("string",), existing=True),
        id="api-add-name-not-str",
    ),
    pytest.param(
        Bad(
            api=lambda b: b.add("x", every="1s", task="t", timezone=5),
            says=("time zone",),
            existing=True,
        ),
        id="api-add-zone-int",
    ),
    pytest.param(
        Bad(api=lambda b: b.add("keep", every="1s", task="t"), says=("keep",), existing=True),
        id="api-add-existing",
    ),
    pytest.param(
        Bad(api=lambda b: b.upcoming(after=datetime(1, 1, 1)), says=("after",), existing=True),
        id="api-upcoming-naive-year-1",
    ),
    pytest.param(
        Bad(api=_reversed_backfill, says=("--to",), existing=True), id="api-backfill-reversed"
    ),
    pytest.param(
        Bad(api=lambda b: b.history(limit=0), says=("limit",), existing=True),
        id="api-history-limit-0",
    ),
    pytest.param(
        Bad(
            api=lambda b: Beat(database_url="nope://x").add("x", every="1s", task="t"),
            says=("nope",),
            existing=True,
        ),
        id="api-beat-bad-url",
    ),
    pytest.param(
        Bad(
            api=lambda b: Beat.from_config("/nonexistent/beatd.toml"),
            says=("not found",),
            existing=True,
        ),
        id="api-from-config-missing",
    ),
]


# -- running one case ---------------------------------------------------------------


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("schedules", "fires", "outbox", "lease")
        }


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A migrated SQLite database holding one API schedule, and a config that owns 'owned'."""
    where = tmp_path_factory.mktemp("existing")
    db = where / "existing.db"
    url = f"sqlite:///{db}"
    migrate.upgrade(url)
    with Beat(database_url=url) as beat:
        beat.add("keep", every="1h", task="t.keep")
    config = where / "beatd.toml"
    config.write_text(f'[beatd]\ndatabase = "{url}"\n[schedules.owned]\nevery = "1h"\ntask = "t"\n')
    return db, config


def _run_cli(
    argv: list[str], env: dict[str, str], cwd: Path, proc: bool, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    if proc:
        full = {k: v for k, v in os.environ.items() if not k.startswith("BEATD_")}
        full.update(env, PYTHONPATH=str(REPO))
        done = subprocess.run(
            [*BEATD, *argv], capture_output=True, text=True, env=full, cwd=cwd, timeout=120
        )
        return done.returncode, done.stdout, done.stderr
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES)
def test_bad_input(
    case: Bad,
    tmp_path: Path,
    existing: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in ("BEATD_DATABASE", "BEATD_BROKER", "BEATD_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    fresh = tmp_path / "never.db"
    (tmp_path / "broken.toml").write_text("[schedules.a\n")
    db, owned_config = existing
    before = _counts(db)

    def fill(text: str) -> str:
        return text.replace("{db}", f"sqlite:///{fresh}").replace("{tmp}", str(tmp_path))

    env = {k: fill(v) for k, v in case.env.items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    if case.api is not None:
        with Beat(database_url=f"sqlite:///{db}") as beat, pytest.raises(BeatdError) as info:
            case.api(beat)
        text = str(info.value)
        lines = list(info.value.problems) if isinstance(info.value, ConfigError) else [text]
        assert "\n" not in text
        assert len(lines) == case.lines, lines
        output = text
    else:
        argv = [fill(a) for a in case.argv]
        if case.existing:
            argv = ["--config", str(owned_config), *argv]
        elif case.toml is not None:
            config = tmp_path / "case.toml"
            if isinstance(case.toml, bytes):
                config.write_bytes(case.toml)
            else:
                config.write_text(fill(case.toml))
            argv = ["--config", str(config), *argv]
        code, out, err = _run_cli(argv, env, tmp_path, case.proc, capsys)
        assert code == 2, (code, out, err)
        assert "Traceback" not in out + err
        lines = err.splitlines()
        assert len(lines) == case.lines, lines
        assert all(line.startswith("beatd: ") for line in lines), lines
        assert not any(line.startswith("beatd: beatd:") for line in lines), lines
        assert all(len(line) < 400 for line in lines), "a problem line is not short"
        output = err
    for fragment in case.says:
        assert fragment in output, (fragment, output)
    assert not fresh.exists(), "a database was created"
    assert _counts(db) == before, "rows were written"


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    kinds = {p.id.split("-")[0] for p in CASES}  # type: ignore[union-attr]
    assert {"toml", "cli", "api", "env", "cron"} <= kinds


# -- valid inputs that look hostile ------------------------------------------------------

ODD_NAMES = [
    pytest.param("nightly-ßü-日本-🕑", id="unicode"),
    pytest.param("a; rm -rf / #", id="semicolon"),
    pytest.param("$(touch {canary})", id="command-substitution"),
    pytest.param("`touch {canary}`", id="backticks"),
    pytest.param("x' OR '1'='1", id="sql-quote"),
    pytest.param("../../etc/passwd", id="path"),
    pytest.param("<script>alert(1)</script>", id="html"),
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_names_are_accepted_verbatim_and_run_nothing(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "pwned"
    name = name.replace("{canary}", str(canary))
    url = f"sqlite:///{tmp_path}/odd.db"
    migrate.upgrade(url)
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    config = tmp_path / "file.toml"
    config.write_text(
        f'[beatd]\ndatabase = "{url}"\n[schedules."{escaped}"]\nevery = "1m"\ntask = "{escaped}"\n'
    )
    assert main(["--config", str(config), "validate"]) == 0
    api = tmp_path / "api.toml"
    api.write_text(f'[beatd]\ndatabase = "{url}"\n')
    done = subprocess.run(
        [*BEATD, "--config", str(api), "add", name, "--every", "5m", "--task", name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with Beat(database_url=url) as beat:
        stored = beat.get(name).schedule
        assert (stored.name, stored.task) == (name, name)
        assert [f.schedule for f in beat.upcoming(limit=1, schedule=name)] == [name]
    capsys.readouterr()
    assert main(["--config", str(api), "list", "--json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == [name]
    assert not canary.exists(), "a name was run by a shell"


def test_100000_schedules_in_one_file_are_accepted_within_bounds(tmp_path: Path) -> None:
    """beatd's decision: a file may hold 100,000 schedules; validating it is bounded in time."""
    lines = ["[beatd]", f'database = "sqlite:///{tmp_path}/never.db"']
    for i in range(100_000):
        lines += [f"[schedules.s{i:06d}]", f'every = "{60 + i % 3600}s"', 'task = "t"']
    config = tmp_path / "big.toml"
    config.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    done = subprocess.run(
        [*BEATD, "--config", str(config), "validate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    took = time.monotonic() - started
    print(f"validate of 100,000 schedules: {took:.1f}s")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "ok: 100000 schedules", "")
    assert took < 120
    assert not (tmp_path / "never.db").exists()
