"""Settings from the TOML file and BEATD_* environment variables, validated in one pass.

The file is found as `--config PATH`, else `./beatd.toml`, else
`$BEATD_CONFIG`; with none of them, loading fails (no silent defaults).
`BEATD_DATABASE` and `BEATD_BROKER` override the file.
Every problem (TOML syntax aside, which stops parsing) is collected and
reported together, one line each.
"""

from __future__ import annotations

import gc
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from beatd.codec import Defaults, did_you_mean, parse_zone, schedule_from_table, show_key
from beatd.durations import format_duration, parse_duration
from beatd.errors import ConfigError
from beatd.model import Format, Schedule, Source
from beatd.redact import redact

DEFAULT_FILE = "beatd.toml"
BROKER_SCHEMES = ("amqp", "amqps", "stdout")
MIN_LEASE = timedelta(seconds=2)
MIN_KEEP_HISTORY = timedelta(minutes=1)
LOG_FORMATS = ("text", "json")
DEFAULT_BIND = "127.0.0.1"
MAX_PARTITIONS = 1024

# The one table of `[beatd]` keys: default (as written in TOML) and meaning.
# It feeds the Settings defaults, the validation below and the CLI help.
BEATD_KEYS: Mapping[str, tuple[Any, str]] = {
    "database": ("sqlite:///beatd.db", "SQLAlchemy URL of the store (env BEATD_DATABASE)"),
    "broker": ("stdout://", "amqp://, amqps:// or stdout:// (env BEATD_BROKER)"),
    "timezone": ("UTC", "default IANA time zone of schedules"),
    "lease": ("10s", "leader lease; failover happens within it (at least 2s)"),
    "format": ("celery", "default message format: celery or json"),
    "http": (
        None,
        "host:port for /metrics and /healthz (host defaults to 127.0.0.1; env BEATD_HTTP)",
    ),
    "log_format": ("text", "text or json"),
    "instance_id": (None, "this instance's id (default <hostname>:<pid>)"),
    "keep_history": ("30d", "how long run history is kept; the leader deletes older rows"),
    "partitions": (
        1,
        f"schedules spread over this many partitions (1..{MAX_PARTITIONS}), each with its own "
        "lease, shared by the running instances; change it by restarting every instance",
    ),
}
TABLES = ("beatd", "schedules")


def _default(key: str) -> Any:
    return BEATD_KEYS[key][0]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything beatd reads from its configuration, parsed and checked."""

    path: Path | None = None
    database: str = _default("database")
    broker: str = _default("broker")
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo(_default("timezone")))
    lease: timedelta = field(default_factory=lambda: parse_duration(_default("lease")))
    format: Format = field(default_factory=lambda: Format(_default("format")))
    http: str | None = _default("http")
    log_format: str = _default("log_format")
    instance_id: str | None = _default("instance_id")
    keep_history: timedelta = field(
        default_factory=lambda: parse_duration(_default("keep_history"))
    )
    partitions: int = _default("partitions")
    schedules: tuple[Schedule, ...] = ()
    defaults: Defaults = field(default_factory=Defaults)


# -- URLs ---------------------------------------------------------------------------


_POSTGRESQL_HINT = "postgresql:// (psycopg 3, installed with beatd)"


def check_database_url(url: object) -> str:
    """A usable SQLAlchemy URL whose driver is installed, or ValueError saying why.

    `postgresql://` means psycopg 3, as the store opens it (engine.parse_url).
    The password is masked in every message.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"expected a SQLAlchemy URL such as 'sqlite:///beatd.db', got {url!r}")
    shown = redact(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(
            f"not a valid SQLAlchemy URL: {shown!r} "
            "(expected e.g. 'sqlite:///beatd.db' or 'postgresql://user@host/db')"
        ) from None
    if parsed.get_backend_name() == "postgres":
        raise ValueError(
            f"unsupported database scheme 'postgres' in {shown!r}: write postgresql://"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"unsupported database in {shown!r}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        use = _POSTGRESQL_HINT if parsed.get_backend_name() == "postgresql" else "another driver"
        raise ValueError(
            f"the database driver {parsed.get_driver_name()!r} of {shown!r} is not installed "
            f"({exc}); install it or use {use}"
        ) from None
    return url


def check_broker_url(url: object) -> str:
    """An amqp://, amqps:// or stdout:// URL, or ValueError saying why (password masked)."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"expected a broker URL such as 'amqp://host/', got {url!r}")
    shown = redact(url)
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f"not a URL: {shown!r} (expected amqp://, amqps:// or stdout://)")
    if scheme.lower() not in BROKER_SCHEMES:
        raise ValueError(
            f"unsupported broker scheme {scheme!r} in {shown!r} "
            "(expected amqp://, amqps:// or stdout://)"
        )
    if scheme.lower() != "stdout":
        try:
            port = urlsplit(url).port
        except ValueError:
            raise ValueError(f"invalid port in {shown!r}") from None
        if port == 0:
            raise ValueError(f"invalid port in {shown!r}")
    return url


def check_http(value: object) -> str:
    """'host:port' to listen on; a bare port or ':port' binds to 127.0.0.1."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected 'host:port' such as '127.0.0.1:9464', got {value!r}")
    host, colon, port = value.strip().rpartition(":")
    if not colon:
        host, port = "", value.strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected 'host:port' with a port from 1 to 65535, got {value!r}")
    return f"{host or DEFAULT_BIND}:{int(port)}"


# -- [beatd] -------------------------------------------------------------------------


def _at_least(low: timedelta) -> Callable[[object], timedelta]:
    def parse(value: object) -> timedelta:
        try:
            duration = parse_duration(value)
        except OverflowError:
            raise ValueError(f"duration out of range: {value!r}") from None
        if duration < low:
            raise ValueError(f"must be at least {format_duration(low)}, got {value!r}")
        return duration

    return parse


def _one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def _format(value: object) -> Format:
    return Format(_one_of(tuple(str(f) for f in Format))(value))


def _instance_id(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise ValueError(f"expected a non-empty printable string, got {value!r}")
    return value


def _partitions(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARTITIONS:
        raise ValueError(f"expected a whole number from 1 to {MAX_PARTITIONS}, got {value!r}")
    return value


_PARSERS: Mapping[str, Callable[[Any], Any]] = {
    "database": check_database_url,
    "broker": check_broker_url,
    "timezone": parse_zone,
    "lease": _at_least(MIN_LEASE),
    "format": _format,
    "http": check_http,
    "log_format": _one_of(LOG_FORMATS),
    "instance_id": _instance_id,
    "keep_history": _at_least(MIN_KEEP_HISTORY),
    "partitions": _partitions,
}
_ENV = {"database": "BEATD_DATABASE", "broker": "BEATD_BROKER", "http": "BEATD_HTTP"}


def _beatd_section(raw: object, env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append("[beatd]: expected a table")
        raw = {}
    problems.extend(
        f"[beatd] {show_key(key)}: unknown key{did_you_mean(str(key), BEATD_KEYS)}"
        for key in raw
        if key not in BEATD_KEYS
    )
    values: dict[str, Any] = {}
    for key, (default, _help) in BEATD_KEYS.items():
        where = f"[beatd] {key}"
        value = raw.get(key, default)
        if key in _ENV and env.get(_ENV[key]):
            where, value = _ENV[key], env[_ENV[key]]
        if value is None:
            values[key] = None
            continue
        try:
            values[key] = _PARSERS[key](value)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            values[key] = _PARSERS[key](default) if default is not None else None
    return values


# -- the file ------------------------------------------------------------------------


NO_CONFIG = (
    f"no config file: pass --config PATH, set $BEATD_CONFIG or create ./{DEFAULT_FILE} "
    "(schedules.example.toml shows every option)"
)


def resolve_path(path: str | Path | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read and whether it was asked for explicitly.

    ConfigError when none is named and ./beatd.toml does not exist: beatd
    never runs on silent defaults.
    """
    if path is not None:
        return Path(path), True
    if Path(DEFAULT_FILE).is_file():
        return Path(DEFAULT_FILE), False
    if env.get("BEATD_CONFIG"):
        return Path(env["BEATD_CONFIG"]), True
    raise ConfigError(NO_CONFIG)


def environment() -> list[tuple[str, str]]:
    """The environment variables beatd reads, with what each does (for the CLI help)."""
    found = ("BEATD_CONFIG", f"the config file, when there is no --config and no ./{DEFAULT_FILE}")
    return [found, *((var, f"overrides [beatd] {key}") for key, var in _ENV.items())]


MAX_FILE_BYTES = 64 * 2**20  # the largest config file read (100,000 schedules take ~10 MiB)
_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_config(path: Path) -> BinaryIO:
    """The config file open for reading; ConfigError unless it is a regular file of at
    most MAX_FILE_BYTES. Opened without blocking: a FIFO is refused, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        kind = next((kind for test, kind in _NOT_REGULAR if test(info.st_mode)), "special")
        problem = f"not a regular file ({kind})"
    elif info.st_size > MAX_FILE_BYTES:
        problem = _too_large()
    if problem is not None:
        os.close(fd)
        raise ConfigError(f"{path}: cannot read config file: {problem}")
    return os.fdopen(fd, "rb")


def _too_large() -> str:
    return f"larger than {MAX_FILE_BYTES // 2**20} MiB"


_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; ConfigError names the file and the line of a syntax error."""
    try:
        with open_config(path) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:  # it grew since it was opened
            raise ConfigError(f"{path}: cannot read config file: {_too_large()}")
        return tomllib.loads(data.decode())
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_AT.search(message)
        if found is None:
            raise ConfigError(f"{path}: invalid TOML: {message}") from None
        text = _TOML_AT.sub("", message)
        raise ConfigError(f"{path}:{found[1]}: invalid TOML: {text} (column {found[2]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None


def load_settings(path: str | Path | None, env: Mapping[str, str] = os.environ) -> Settings:
    """Read, validate and return the settings; ConfigError lists every problem."""
    found, explicit = resolve_path(path, env)
    if explicit and not found.exists():
        raise ConfigError(f"{found}: config file not found")
    with _no_cyclic_gc():
        try:
            return _stream_settings(found, env)
        except (
            _NotStreamable,
            tomllib.TOMLDecodeError,
            UnicodeDecodeError,
            RecursionError,
            OSError,
        ):
            pass  # the whole-document parse below decides, and words any error as always
        return settings_from_document(read_toml(found), env, path=found)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Parsing builds millions of objects and no cycles: the cyclic collector, run again and
    again over an ever larger heap, cost 1.5 of 8 s of CPU for 100,000 schedules."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- reading a large file in parts -----------------------------------------------------
#
# tomllib holds the whole document plus per-table bookkeeping while it parses:
# several times the file's schedules in memory at once. A file that is a head
# ([beatd] and anything else) followed only by `[schedules.NAME]` tables is
# parsed instead a batch of tables at a time, each batch converted and dropped
# before the next is read. The result is the same document: every statement
# after the head lies in one schedule's table, and a batch boundary inside a
# multi-line value leaves the batch before it unterminated (a parse error).
# Anything else (a `[` line that is not such a header, a schedule table the
# head or an earlier batch already touched, any error) falls back to parsing
# the whole file, which then reports errors exactly as before.

_BATCH = 1000  # schedule tables per tomllib call
_KEY = rb"""(?:[A-Za-z0-9_-]+|"[^"\\\r\n]*"|'[^'\r\n]*')"""
_SCHEDULE_HEADER = re.compile(rb"\[schedules\." + _KEY + rb"\][ \t]*(?:#[^\r\n]*)?\r?\n?")
_SUBTABLE_HEADER = re.compile(rb"\[\[?schedules\." + _KEY + rb"\.")


class _NotStreamable(Exception):
    """The file needs the whole-document parse."""


def _parts(handle: BinaryIO) -> Iterator[dict[str, Any]]:
    """The head (all before the first `[schedules.NAME]` line), then batches of tables."""
    lines: list[bytes] = []
    headers = read = 0
    in_schedules = False
    for line in handle:
        read += len(line)
        if read > MAX_FILE_BYTES:  # it grew since it was opened: read_toml says so
            raise _NotStreamable
        if line[:1] == b"[" and _SCHEDULE_HEADER.fullmatch(line):
            if not in_schedules or headers >= _BATCH:
                yield tomllib.loads(b"".join(lines).decode())
                lines, headers, in_schedules = [], 0, True
            headers += 1
        elif in_schedules and line.lstrip(b" \t")[:1] == b"[" and not _SUBTABLE_HEADER.match(line):
            raise _NotStreamable
        lines.append(line)
    yield tomllib.loads(b"".join(lines).decode())


def _stream_settings(path: Path, env: Mapping[str, str]) -> Settings:
    """Settings from the file read in parts; _NotStreamable when it must be read whole."""
    with open_config(path) as handle:
        parts = _parts(handle)
        head = next(parts)
        batch = next(parts, None)
        if batch is None:  # no [schedules.NAME] header: the head is the whole document
            return settings_from_document(head, env, path=path)
        if "schedules" in head:
            raise _NotStreamable
        problems: list[str] = []
        values = _settings_values(head, env, problems)
        defaults = Defaults(timezone=values["timezone"], format=values["format"])
        del head
        names: set[str] = set()
        schedules: list[Schedule] = []
        while batch is not None:
            tables = batch.pop("schedules", None)
            if batch or not isinstance(tables, dict) or not names.isdisjoint(tables):
                raise _NotStreamable
            names.update(tables)
            _decode(tables, defaults, problems, schedules)
            batch = next(parts, None)
    if problems:
        raise ConfigError(problems[0], problems=problems)
    return Settings(path=path, schedules=tuple(schedules), defaults=defaults, **values)


def settings_from_document(
    document: Mapping[str, Any], env: Mapping[str, str], *, path: Path | None = None
) -> Settings:
    """Settings from an already parsed TOML document (and the environment)."""
    problems: list[str] = []
    values = _settings_values(document, env, problems)
    defaults = Defaults(timezone=values["timezone"], format=values["format"])
    schedules = _schedules(document.get("schedules"), defaults, problems)
    if problems:
        raise ConfigError(problems[0], problems=problems)
    return Settings(path=path, schedules=schedules, defaults=defaults, **values)


def _settings_values(
    document: Mapping[str, Any], env: Mapping[str, str], problems: list[str]
) -> dict[str, Any]:
    """Unknown top-level tables, then the [beatd] values (problems appended in that order)."""
    for key in document:
        if key not in TABLES:
            hint = did_you_mean(key, TABLES)
            problems.append(
                f"[{show_key(key)}]: unknown table{hint} (expected [beatd] and [schedules.NAME])"
            )
    return _beatd_section(document.get("beatd"), env, problems)


def _schedules(raw: object, defaults: Defaults, problems: list[str]) -> tuple[Schedule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problems.append("[schedules]: expected tables such as [schedules.nightly]")
        return ()
    schedules: list[Schedule] = []
    _decode(raw, defaults, problems, schedules)
    return tuple(schedules)


def _decode(
    tables: Mapping[str, Any], defaults: Defaults, problems: list[str], into: list[Schedule]
) -> None:
    for name, table in tables.items():
        try:
            into.append(schedule_from_table(name, table, defaults, Source.FILE))
        except ConfigError as exc:
            problems.extend(exc.problems)
