"""The file and the environment: resolution, overrides, and every problem on one line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from beatd.config import (
    BEATD_KEYS,
    NO_CONFIG,
    Settings,
    check_broker_url,
    check_database_url,
    check_http,
    load_settings,
    settings_from_document,
)
from beatd.durations import format_duration
from beatd.errors import ConfigError
from beatd.model import Format, Source

EXAMPLE = Path(__file__).resolve().parent.parent / "schedules.example.toml"


def write(tmp_path: Path, text: str, name: str = "beatd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env or {})
    for line in caught.value.problems:
        assert "\n" not in line
    return caught.value.problems


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in an empty directory, so no ./beatd.toml is picked up by accident."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def test_no_config_file_is_an_error_not_silent_defaults() -> None:
    """With no --config, no $BEATD_CONFIG and no ./beatd.toml nothing runs on defaults."""
    for env in ({}, {"BEATD_DATABASE": "sqlite:///c.db"}):
        with pytest.raises(ConfigError) as caught:
            load_settings(None, env=env)
        assert caught.value.problems == (NO_CONFIG,)
    assert "--config" in NO_CONFIG and "BEATD_CONFIG" in NO_CONFIG and "beatd.toml" in NO_CONFIG


def test_defaults_of_an_empty_document() -> None:
    settings = settings_from_document({}, env={})
    assert settings == Settings()
    assert settings.path is None
    assert settings.database == "sqlite:///beatd.db"
    assert settings.broker == "stdout://"
    assert settings.timezone == ZoneInfo("UTC")
    assert settings.lease == timedelta(seconds=10)
    assert settings.format == Format.CELERY
    assert settings.http is None
    assert settings.log_format == "text"
    assert settings.schedules == ()


def test_keep_history_and_history_limit_are_read() -> None:
    Path("beatd.toml").write_text(
        '[beatd]\nkeep_history = "7d"\n'
        '[schedules.x]\nevery = "1s"\ntask = "t"\nhistory_limit = 500\n'
    )
    settings = load_settings(None, env={})
    assert settings.keep_history == timedelta(days=7)
    assert settings.schedules[0].history_limit == 500
    assert settings.partitions == 1


def test_partitions_are_read() -> None:
    Path("beatd.toml").write_text("[beatd]\npartitions = 8\n")
    assert load_settings(None, env={}).partitions == 8


def test_defaults_table_feeds_settings() -> None:
    settings = Settings()
    shown = {
        "timezone": settings.timezone.key,
        "lease": format_duration(settings.lease),
        "keep_history": format_duration(settings.keep_history),
        "format": str(settings.format),
    }
    for key, (default, help_text) in BEATD_KEYS.items():
        assert help_text
        assert shown.get(key, getattr(settings, key)) == default


def test_full_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[beatd]
database = "postgresql+psycopg://beat:secret@db/beatd"
broker = "amqp://guest:guest@127.0.0.1:5672/%2F"
timezone = "Europe/Berlin"
lease = "15s"
format = "json"
http = ":9464"
log_format = "json"
instance_id = "beat-1"

[schedules.nightly]
cron = "30 2 * * *"
task = "reports.nightly"

[schedules.ping]
every = "30s"
task = "app.ping"
timezone = "UTC"
format = "celery"
""",
    )
    settings = load_settings(path, env={})
    assert settings.path == path
    assert settings.database == "postgresql+psycopg://beat:secret@db/beatd"
    assert settings.broker.startswith("amqp://")
    assert settings.timezone == ZoneInfo("Europe/Berlin")
    assert settings.lease == timedelta(seconds=15)
    assert settings.format == Format.JSON
    assert settings.http == "127.0.0.1:9464"
    assert settings.log_format == "json"
    assert settings.instance_id == "beat-1"
    nightly, ping = settings.schedules
    assert (nightly.name, nightly.timezone.key, nightly.format) == (
        "nightly",
        "Europe/Berlin",
        "json",
    )
    assert (ping.name, ping.timezone.key, ping.format) == ("ping", "UTC", "celery")
    assert {s.source for s in settings.schedules} == {Source.FILE}


def test_example_file_validates() -> None:
    settings = load_settings(EXAMPLE, env={})
    assert settings.database == "sqlite:///beatd.db"
    assert settings.broker == "stdout://"
    assert len(settings.schedules) >= 8
    assert {s.kind for s in settings.schedules} == {"cron", "every", "rrule", "at"}
    assert any(s.kind == "every" and s.spec.period.total_seconds() < 60 for s in settings.schedules)  # type: ignore[union-attr]


# -- where the file comes from ---------------------------------------------------------


def test_dot_beatd_toml_is_found() -> None:
    Path("beatd.toml").write_text('[beatd]\nlease = "20s"\n')
    assert load_settings(None, env={}).lease == timedelta(seconds=20)


def test_dot_beatd_toml_wins_over_env(tmp_path: Path) -> None:
    Path("beatd.toml").write_text('[beatd]\nlease = "20s"\n')
    other = write(tmp_path, '[beatd]\nlease = "30s"\n', "other.toml")
    assert load_settings(None, env={"BEATD_CONFIG": str(other)}).lease == timedelta(seconds=20)


def test_env_config_when_no_local_file(tmp_path: Path) -> None:
    other = write(tmp_path, '[beatd]\nlease = "30s"\n', "other.toml")
    settings = load_settings(None, env={"BEATD_CONFIG": str(other)})
    assert (settings.lease, settings.path) == (timedelta(seconds=30), other)


def test_explicit_path_wins(tmp_path: Path) -> None:
    Path("beatd.toml").write_text('[beatd]\nlease = "20s"\n')
    other = write(tmp_path, '[beatd]\nlease = "30s"\n', "other.toml")
    assert load_settings(other, env={}).lease == timedelta(seconds=30)


@pytest.mark.parametrize("how", ["argument", "env"])
def test_missing_explicit_file_is_an_error(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        if how == "argument":
            load_settings(missing, env={})
        else:
            load_settings(None, env={"BEATD_CONFIG": str(missing)})
    assert caught.value.problems == (f"{missing}: config file not found",)


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[beatd]\ndatabase = "sqlite:///a.db"\nbroker = "stdout://"\n')
    settings = load_settings(
        path, env={"BEATD_DATABASE": "sqlite:///b.db", "BEATD_BROKER": "amqp://h/"}
    )
    assert (settings.database, settings.broker) == ("sqlite:///b.db", "amqp://h/")


def test_empty_env_value_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, '[beatd]\ndatabase = "sqlite:///a.db"\n')
    assert load_settings(path, env={"BEATD_DATABASE": ""}).database == "sqlite:///a.db"


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, ""), env={"BEATD_BROKER": "redis://u:hunter2@h/"})
    (line,) = caught.value.problems
    assert line.startswith("BEATD_BROKER: unsupported broker scheme 'redis'")
    assert "hunter2" not in line


# -- bad files: one line per problem ----------------------------------------------------

BAD = [
    (
        "toml-syntax",
        '[beatd]\ntimezone = "UTC"\nlease = \n',
        ["beatd.toml:3: invalid TOML: Invalid value (column 9)"],
    ),
    ("toml-duplicate-table", "[beatd]\n[beatd]\n", ["beatd.toml:2: invalid TOML: "]),
    (
        "unknown-beatd-key",
        '[beatd]\ndatabse = "sqlite://"\n',
        ["[beatd] databse: unknown key (did you mean 'database'?)"],
    ),
    (
        "unknown-table",
        '[schedule.x]\nevery = "5m"\n',
        ["[schedule]: unknown table (did you mean 'schedules'?)"],
    ),
    ("beatd-not-table", "beatd = 5\n", ["[beatd]: expected a table"]),
    ("schedules-not-tables", "[schedules]\nx = 5\n", ["schedule 'x': expected a table of options"]),
    (
        "lease-too-short",
        '[beatd]\nlease = "1s"\n',
        ["[beatd] lease: must be at least 2s, got '1s'"],
    ),
    ("lease-garbage", '[beatd]\nlease = "long"\n', ["[beatd] lease: expected a duration"]),
    (
        "keep-history-too-short",
        '[beatd]\nkeep_history = "30s"\n',
        ["[beatd] keep_history: must be at least 1m, got '30s'"],
    ),
    (
        "partitions-zero",
        "[beatd]\npartitions = 0\n",
        ["[beatd] partitions: expected a whole number from 1 to 1024, got 0"],
    ),
    (
        "partitions-text",
        '[beatd]\npartitions = "8"\n',
        ["[beatd] partitions: expected a whole number from 1 to 1024, got '8'"],
    ),
    (
        "history-limit-zero",
        '[schedules.x]\nevery = "5m"\ntask = "t"\nhistory_limit = 0\n',
        ["schedule 'x': history_limit: must be 1 or more, got 0"],
    ),
    (
        "zone-typo",
        '[beatd]\ntimezone = "Europe/Berln"\n',
        ["[beatd] timezone: unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)"],
    ),
    (
        "format-bad",
        '[beatd]\nformat = "xml"\n',
        ["[beatd] format: expected one of celery, json, got 'xml'"],
    ),
    (
        "log-format-bad",
        '[beatd]\nlog_format = "yaml"\n',
        ["[beatd] log_format: expected one of text, json"],
    ),
    (
        "http-bad-port",
        '[beatd]\nhttp = "127.0.0.1:99999"\n',
        ["[beatd] http: expected 'host:port' with a port"],
    ),
    (
        "instance-id-empty",
        '[beatd]\ninstance_id = ""\n',
        ["[beatd] instance_id: expected a non-empty"],
    ),
    (
        "database-garbage",
        '[beatd]\ndatabase = "not a url"\n',
        ["[beatd] database: not a valid SQLAlchemy URL: 'not a url'"],
    ),
    (
        "database-unknown-dialect",
        '[beatd]\ndatabase = "nosuchdb://admin:hunter2@h/db"\n',
        ["[beatd] database: unsupported database in 'nosuchdb://admin:***@h/db'"],
    ),
    (
        "broker-scheme",
        '[beatd]\nbroker = "redis://admin:hunter2@h:6379/0"\n',
        ["[beatd] broker: unsupported broker scheme 'redis' in 'redis://admin:***@h:6379/0'"],
    ),
    (
        "broker-bad-port",
        '[beatd]\nbroker = "amqp://guest:hunter2@h:notaport/"\n',
        ["[beatd] broker: invalid port in 'amqp://guest:***@h:notaport/'"],
    ),
    ("broker-not-url", '[beatd]\nbroker = "rabbit"\n', ["[beatd] broker: not a URL: 'rabbit'"]),
    (
        "problems-across-schedules",
        """
[beatd]
lease = "1s"

[schedules.a]
every = "0s"
task = "t"

[schedules.b]
cron = "* * * * *"

[schedules.ok]
every = "5m"
task = "t"

[schedules.c]
at = "never"
task = "t"
timezone = "Mars/Olympus"
""",
        [
            "[beatd] lease: must be at least 2s",
            "schedule 'a': every: must be more than 0s",
            "schedule 'b': task: is required",
            "schedule 'c': timezone: unknown time zone 'Mars/Olympus'",
            "schedule 'c': at: expected an ISO-8601 date and time",
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_file(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    found = problems(path)
    assert len(found) == len(expected), found
    for line, fragment in zip(found, expected, strict=True):
        if fragment.startswith("beatd.toml"):
            fragment = f"{tmp_path}/{fragment}"
        assert fragment in line
        assert "hunter2" not in line


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "beatd.toml"
    path.write_bytes(b'[beatd]\ntimezone = "\xff"\n')
    assert problems(path) == (f"{path}: invalid TOML: not UTF-8 text",)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (line,) = problems(tmp_path)
    assert line.startswith(f"{tmp_path}: cannot read config file")


# -- URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["sqlite:///beatd.db", "sqlite://", "postgresql+psycopg://u:p@h:5432/db", "postgresql://h/db"],
)
def test_good_database_urls(url: str) -> None:
    assert check_database_url(url) == url


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@127.0.0.1:5672/%2F", "amqps://h/", "stdout://", "AMQP://h"]
)
def test_good_broker_urls(url: str) -> None:
    assert check_broker_url(url) == url


@pytest.mark.parametrize(
    ("value", "bind"),
    [
        ("9464", "127.0.0.1:9464"),
        (":9464", "127.0.0.1:9464"),
        (9464, "127.0.0.1:9464"),
        ("0.0.0.0:80", "0.0.0.0:80"),
        ("[::1]:9464", "[::1]:9464"),
    ],
)
def test_http(value: object, bind: str) -> None:
    assert check_http(value) == bind


def test_beatd_http_overrides_the_file(tmp_path: Path) -> None:
    """Instances on one host share a config file and each serve /metrics on their own port."""
    config = tmp_path / "beatd.toml"
    config.write_text('[beatd]\nhttp = "127.0.0.1:9464"\n')
    assert load_settings(config, env={}).http == "127.0.0.1:9464"
    assert load_settings(config, env={"BEATD_HTTP": "127.0.0.1:9465"}).http == "127.0.0.1:9465"
