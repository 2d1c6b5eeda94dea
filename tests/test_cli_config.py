"""`beatd validate` and `beatd upcoming`: exit codes, one line per problem, JSON shape."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from beatd.cli.main import main
from beatd.config import NO_CONFIG

REPO = Path(__file__).resolve().parent.parent

GOOD = """
[beatd]
database = "sqlite:///{db}"
broker = "stdout://"

[schedules.b]
every = "5m"
task = "app.b"

[schedules.a]
every = "5m"
task = "app.a"

[schedules.berlin]
every = "10m"
task = "app.berlin"
timezone = "Europe/Berlin"

[schedules.off]
every = "1m"
task = "app.off"
enabled = false
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("BEATD_CONFIG", "BEATD_DATABASE", "BEATD_BROKER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "beatd.toml"
    path.write_text(GOOD.format(db=tmp_path / "beatd.db"))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err.splitlines()


# -- validate ------------------------------------------------------------------------


def test_validate_ok(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert run(capsys, "validate", "--config", str(config)) == (0, "ok: 4 schedules\n", [])


def test_validate_config_before_command(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert run(capsys, "--config", str(config), "validate")[0] == 0


def test_validate_example_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", "--config", str(REPO / "schedules.example.toml"))
    assert (code, err) == (0, [])
    assert out.startswith("ok: ")


def test_validate_finds_dot_beatd_toml(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    Path("beatd.toml").write_text(config.read_text())
    assert run(capsys, "validate") == (0, "ok: 4 schedules\n", [])


def test_validate_finds_env_config(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEATD_CONFIG", str(config))
    assert run(capsys, "validate") == (0, "ok: 4 schedules\n", [])


@pytest.mark.parametrize("command", ["validate", "list", "upcoming", "status", "run"])
def test_no_config_file_exits_2_saying_so(capsys: pytest.CaptureFixture[str], command: str) -> None:
    """No --config, no $BEATD_CONFIG, no ./beatd.toml: no silent defaults (was: exit 0)."""
    assert run(capsys, command) == (2, "", [f"beatd: {NO_CONFIG}"])


def test_env_broker_override_is_checked(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEATD_BROKER", "kafka://admin:hunter2@k:9092")
    code, _, err = run(capsys, "validate", "--config", str(config))
    assert code == 2
    assert err == [
        "beatd: BEATD_BROKER: unsupported broker scheme 'kafka' in 'kafka://admin:***@k:9092' "
        "(expected amqp://, amqps:// or stdout://)"
    ]


SCHEDULE = '[schedules.job]\ntask = "t"\n'
BAD = [
    ("malformed-toml", '[beatd]\nlease = "10s\n', ["beatd.toml:2: invalid TOML: "]),
    (
        "unknown-key",
        SCHEDULE + 'every = "5m"\nqueu = "x"\n',
        ["schedule 'job': queu: unknown key (did you mean 'queue'?)"],
    ),
    ("missing-task", '[schedules.job]\nevery = "5m"\n', ["schedule 'job': task: is required"]),
    (
        "two-kinds",
        SCHEDULE + 'every = "5m"\ncron = "* * * * *"\n',
        ["schedule 'job': cron, every: only one of"],
    ),
    ("no-kind", SCHEDULE, ["schedule 'job': needs one of cron, every, rrule or at"]),
    ("impossible-cron", SCHEDULE + 'cron = "0 0 30 2 *"\n', ["schedule 'job': cron: "]),
    ("cron-six-too-many", SCHEDULE + 'cron = "* * * * * * *"\n', ["schedule 'job': cron: "]),
    ("bad-rrule", SCHEDULE + 'rrule = "FREQ=FORTNIGHTLY"\n', ["schedule 'job': rrule: "]),
    (
        "unknown-zone",
        SCHEDULE + 'every = "5m"\ntimezone = "Europe/Berln"\n',
        [
            "schedule 'job': timezone: unknown time zone 'Europe/Berln' "
            "(did you mean 'Europe/Berlin'?)"
        ],
    ),
    ("zero-every", SCHEDULE + 'every = "0s"\n', ["schedule 'job': every: must be more than 0s"]),
    ("negative-every", SCHEDULE + "every = -30\n", ["schedule 'job': every: must be more than 0s"]),
    (
        "garbage-every",
        SCHEDULE + 'every = "often"\n',
        ["schedule 'job': every: expected a duration"],
    ),
    (
        "garbage-grace",
        SCHEDULE + 'every = "5m"\ngrace = "5 mins"\n',
        ["schedule 'job': grace: expected a duration"],
    ),
    (
        "bad-misfire",
        SCHEDULE + 'every = "5m"\nmisfire = "never"\n',
        ["schedule 'job': misfire: expected one of skip, coalesce, all"],
    ),
    (
        "bad-format",
        SCHEDULE + 'every = "5m"\nformat = "pickle"\n',
        ["schedule 'job': format: expected one of celery, json"],
    ),
    (
        "end-before-start",
        SCHEDULE + 'every = "5m"\nstart = "2026-02-01T00:00:00"\nend = "2026-01-01T00:00:00"\n',
        ["schedule 'job': end: must be after start"],
    ),
    (
        "bad-database-url",
        '[beatd]\ndatabase = "postgresql+nodriver://admin:hunter2@db/x"\n',
        ["[beatd] database: unsupported database in 'postgresql+nodriver://admin:***@db/x'"],
    ),
    (
        "bad-broker-url",
        '[beatd]\nbroker = "redis://admin:hunter2@cache:6379/0"\n',
        ["[beatd] broker: unsupported broker scheme 'redis' in 'redis://admin:***@cache:6379/0'"],
    ),
    (
        "several-problems",
        '[beatd]\nlease = "1s"\ntimezon = "UTC"\n'
        + '[schedules.x]\nevery = "5m"\n'
        + '[schedules.y]\ncron = "99 * * * *"\ntask = "t"\n',
        [
            "[beatd] timezon: unknown key (did you mean 'timezone'?)",
            "[beatd] lease: must be at least 2s",
            "schedule 'x': task: is required",
            "schedule 'y': cron: ",
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_validate_bad_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "beatd.toml"
    path.write_text(text)
    code, out, err = run(capsys, "validate", "--config", str(path))
    assert code == 2
    assert out == ""
    assert len(err) == len(expected), err
    for line, fragment in zip(err, expected, strict=True):
        if fragment.startswith("beatd.toml"):
            fragment = f"{path}{fragment.removeprefix('beatd.toml')}"
        assert line.startswith(f"beatd: {fragment}")
        assert "hunter2" not in line


def test_missing_explicit_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    for command in ("validate", "upcoming"):
        assert run(capsys, command, "--config", str(missing)) == (
            2,
            "",
            [f"beatd: {missing}: config file not found"],
        )


# -- upcoming ------------------------------------------------------------------------

AFTER = "2026-06-01T12:00:00Z"


def upcoming_json(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> Any:
    code, out, err = run(capsys, "upcoming", "--config", str(config), "--json", *argv)
    assert (code, err) == (0, [])
    return json.loads(out)


def test_upcoming_json_shape(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert upcoming_json(capsys, config, "--after", AFTER, "--limit", "4") == [
        {"schedule": "a", "at": "2026-06-01T12:05:00Z", "local": "2026-06-01T12:05:00+00:00"},
        {"schedule": "b", "at": "2026-06-01T12:05:00Z", "local": "2026-06-01T12:05:00+00:00"},
        {"schedule": "a", "at": "2026-06-01T12:10:00Z", "local": "2026-06-01T12:10:00+00:00"},
        {"schedule": "b", "at": "2026-06-01T12:10:00Z", "local": "2026-06-01T12:10:00+00:00"},
    ]


def test_upcoming_after_is_exclusive(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    fires = upcoming_json(
        capsys, config, "--after", "2026-06-01T12:10:00Z", "--schedule", "berlin", "--limit", "2"
    )
    assert fires == [
        {"schedule": "berlin", "at": "2026-06-01T12:20:00Z", "local": "2026-06-01T14:20:00+02:00"},
        {"schedule": "berlin", "at": "2026-06-01T12:30:00Z", "local": "2026-06-01T14:30:00+02:00"},
    ]


def test_upcoming_after_with_offset_and_naive(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    with_offset = upcoming_json(capsys, config, "--after", "2026-06-01T14:00:00+02:00")
    naive = upcoming_json(capsys, config, "--after", "2026-06-01T12:00:00")
    assert with_offset == naive
    assert len(naive) == 10


def test_upcoming_ties_by_name_and_until(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    fires = upcoming_json(
        capsys, config, "--after", AFTER, "--until", "2026-06-01T12:10:00Z", "--limit", "100"
    )
    assert [(f["schedule"], f["at"][11:16]) for f in fires] == [
        ("a", "12:05"),
        ("b", "12:05"),
        ("a", "12:10"),
        ("b", "12:10"),
        ("berlin", "12:10"),
    ]


def test_upcoming_disabled_left_out(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    fires = upcoming_json(capsys, config, "--after", AFTER, "--limit", "50")
    assert "off" not in {f["schedule"] for f in fires}


def test_upcoming_table(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, err = run(capsys, "upcoming", "--config", str(config), "--limit", "3")
    assert (code, err) == (0, [])
    header, *rows = out.splitlines()
    assert header.split() == ["SCHEDULE", "LOCAL", "UTC", "WHEN", "SPEC"]
    assert len(rows) == 3
    assert all(" in " in row and ("every 5m" in row or "every 10m" in row) for row in rows)


def test_upcoming_nothing(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, _ = run(
        capsys, "upcoming", "--config", str(config), "--after", AFTER, "--until", AFTER
    )
    assert (code, out) == (0, "no upcoming fires\n")


def test_upcoming_needs_no_database(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert run(capsys, "upcoming", "--config", str(config), "--json")[0] == 0
    assert not (config.parent / "beatd.db").exists()


def test_upcoming_unknown_schedule(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, err = run(capsys, "upcoming", "--config", str(config), "--schedule", "zz")
    assert (code, out, err) == (1, "", ["beatd: no schedule named 'zz'"])


BAD_ARGS = [
    ("limit-negative", ["--limit", "-1"], "beatd: --limit: must be from 1 to 100000, got -1"),
    ("limit-zero", ["--limit", "0"], "beatd: --limit: must be from 1 to 100000, got 0"),
    ("limit-garbage", ["--limit", "ten"], "beatd: --limit: expected a whole number, got 'ten'"),
    ("limit-huge", ["--limit", "100001"], "beatd: --limit: must be from 1 to 100000"),
    ("after-garbage", ["--after", "yesterday"], "beatd: --after: not an ISO-8601 time"),
    ("until-garbage", ["--until", "2026-13-01"], "beatd: --until: not an ISO-8601 time"),
    (
        "until-before-after",
        ["--after", "2026-06-02T00:00:00Z", "--until", "2026-06-01T00:00:00Z"],
        "beatd: --until: is before --after",
    ),
    ("unknown-flag", ["--limt", "3"], "unrecognized arguments: --limt 3"),
    ("missing-value", ["--after"], "argument --after: expected one argument"),
]


@pytest.mark.parametrize(
    ("argv", "expected"), [c[1:] for c in BAD_ARGS], ids=[c[0] for c in BAD_ARGS]
)
def test_upcoming_bad_args(
    capsys: pytest.CaptureFixture[str], config: Path, argv: list[str], expected: str
) -> None:
    code, out, err = run(capsys, "upcoming", "--config", str(config), *argv)
    assert (code, out) == (2, "")
    assert len(err) == 1
    assert err[0].startswith("beatd: ")
    assert expected in err[0]


# -- the real thing, in a subprocess ---------------------------------------------------


def beatd(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATD_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "beatd.cli.main", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_subprocess_validate_and_upcoming(tmp_path: Path, config: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[schedules.x]\nevery = "0s"\ntimezone = "Nowhere/City"\n')
    result = beatd(tmp_path, "validate", "--config", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "beatd: schedule 'x': timezone: unknown time zone 'Nowhere/City'",
        "beatd: schedule 'x': task: is required (the Celery task name to run)",
        "beatd: schedule 'x': every: must be more than 0s, got '0s'",
    ]

    result = beatd(tmp_path, "upcoming", "--config", str(config), "--after", AFTER, "--json")
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout)[0] == {
        "schedule": "a",
        "at": "2026-06-01T12:05:00Z",
        "local": "2026-06-01T12:05:00+00:00",
    }

    result = beatd(tmp_path, "upcoming", "--config", str(config), "--limit", "-1")
    assert (result.returncode, result.stdout) == (2, "")
    assert "Traceback" not in result.stderr


class _SlowClock:
    """Each reading is 30 s after the last: a query that took that long between two reads."""

    def __init__(self) -> None:
        self.at = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.at += timedelta(seconds=30)
        return self.at

    def monotonic(self) -> float:
        return self.at.timestamp()


def test_upcoming_labels_are_relative_to_the_instant_queried(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow query (100,000 schedules) labelled the fires it found "20 s ago"."""
    path = tmp_path / "beatd.toml"
    path.write_text('[schedules.tick]\nevery = "10s"\ntask = "t"\n')
    monkeypatch.setattr("beatd.api.SystemClock", _SlowClock)
    code, out, _ = run(capsys, "upcoming", "--config", str(path), "--limit", "3")
    rows = out.splitlines()[1:]
    assert code == 0 and len(rows) == 3
    assert [re.split(r"\s{2,}", row)[3] for row in rows] == ["in 10 s", "in 20 s", "in 30 s"]
