"""Fuzz the command line (not collected by CI): random argv against a SQLite database.

`main(argv)` must return 0, 1 or 2 and never raise (argparse's --help exits 0);
on 1 or 2 every stderr line is one `beatd: ...` problem, with no traceback.

    .venv/bin/python -m pytest fuzz/fuzz_cli.py
    .venv/bin/python fuzz/fuzz_cli.py --seconds 180
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from fuzz_support import EXAMPLES, ZONES, run_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beatd.cli.main import main
from beatd.store.sql import migrate

_DIR = Path(tempfile.mkdtemp(prefix="beatd-fuzz-cli-"))
_URL = f"sqlite:///{_DIR}/fuzz.db"
_CONFIG = _DIR / "beatd.toml"
_CONFIG.write_text(f'[beatd]\ndatabase = "{_URL}"\n[schedules.owned]\nevery = "1h"\ntask = "t"\n')
migrate.upgrade(_URL)

_VALUES = st.one_of(
    st.sampled_from(
        [
            "5s",
            "0",
            "-1",
            "1h30m",
            "* * * * *",
            "0 0 30 2 *",
            "FREQ=DAILY",
            "2027-01-01T00:00:00Z",
            "2027-01-01",
            "[1, 2]",
            '{"a": 1}',
            "{bad",
            "NaN",
            "owned",
            "x",
            "",
            "celery",
            "all",
            *ZONES,
        ]
    ),
    st.text(max_size=12),
    st.integers(-(10**20), 10**20).map(str),
)
_FLAGS = st.sampled_from(
    [
        "--cron",
        "--every",
        "--rrule",
        "--at",
        "--task",
        "--args",
        "--kwargs",
        "--queue",
        "--timezone",
        "--start",
        "--end",
        "--jitter",
        "--expires",
        "--misfire",
        "--grace",
        "--max-fires",
        "--priority",
        "--format",
        "--headers",
        "--limit",
        "--after",
        "--until",
        "--schedule",
        "--from",
        "--to",
        "--note",
        "--json",
        "--replace",
        "--disabled",
        "--log-format",
    ]
)
_COMMANDS = st.sampled_from(
    [
        "validate",
        "upcoming",
        "add",
        "remove",
        "pause",
        "resume",
        "trigger",
        "backfill",
        "list",
        "history",
        "status",
        "db",
        "nope",
    ]
)


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    argv = ["--config", str(_CONFIG), draw(_COMMANDS)]
    if argv[-1] == "db":
        argv.append(draw(st.sampled_from(["current", "upgrade", "down", ""])))
    if draw(st.booleans()):
        argv.append(draw(st.sampled_from(["owned", "x", "y z", "ü", ""])))
    for _ in range(draw(st.integers(0, 5))):
        argv.append(draw(_FLAGS))
        if draw(st.integers(0, 4)):
            argv.append(draw(_VALUES))
    return argv


@settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
@given(argv=argvs())
def test_cli_exits_0_1_or_2_with_one_line_per_problem(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = {k: v for k, v in os.environ.items() if k.startswith("BEATD_")}
    for key in env:
        del os.environ[key]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # --help
                code = exc.code if isinstance(exc.code, int) else 2
                assert code == 0, (argv, err.getvalue())
    finally:
        os.environ.update(env)
    assert code in (0, 1, 2), (argv, code)
    assert "Traceback" not in err.getvalue() + out.getvalue(), argv
    if code:
        lines = err.getvalue().splitlines()
        assert lines, (argv, code, "no message")
        assert all(line.startswith("beatd: ") for line in lines), (argv, lines)


if __name__ == "__main__":
    run_for([test_cli_exits_0_1_or_2_with_one_line_per_problem])
