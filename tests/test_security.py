"""Security basics: secrets stay secret, input stays data, the service runs confined.

- Broker and database passwords never appear in logs (json and text), in
  `status` (text and --json), `list`, `history`, error messages, `/metrics` or
  `/healthz`: checked on real `beatd run` processes whose URLs carry
  distinctive passwords (percent-encoded too), and with every command and a
  daemon on real PostgreSQL and RabbitMQ accounts whose password holds
  `# @ : / ?` (in the user info or as `?password=`), written raw as well.
- The TOML file is parsed by tomllib alone: YAML tags and pickle payloads are
  refused as invalid TOML and nothing runs (plus a scan of beatd's imports).
- Task names, args, kwargs and schedule names are data: a task named
  `__import__('os').system('touch ...')` is published verbatim, nothing runs.
- The systemd unit runs as a non-root user with hardening options.
- `/metrics` and `/healthz` bind 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from unit_file import read_unit

from beatd.config import check_http, settings_from_document
from beatd.http import HttpServer
from beatd.metrics import Metrics
from beatd.store.sql import migrate

REPO = Path(__file__).resolve().parent.parent
BEATD = [sys.executable, "-m", "beatd.cli.main"]

DB_SECRET = "Pg%40S3cretPW"  # percent-encoded in the URL: the password is Pg@S3cretPW
BROKER_SECRET = "Br%23S3cretPW"  # ... and Br#S3cretPW
FORBIDDEN = ("S3cretPW", "Pg@S3cret", "Br#S3cret", "Pg%40S3cret", "Br%23S3cret")


def _assert_clean(where: str, text: str) -> None:
    for secret in FORBIDDEN:
        assert secret not in text, f"{where} shows the password ({secret!r}):\n{text}"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEATD_", "NOTIFY_SOCKET"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def _cli(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BEATD, "--config", str(config), *argv],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=config.parent,
        timeout=120,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Run:
    """A `beatd run` subprocess with its stdout and stderr in files."""

    def __init__(self, config: Path, log_format: str, tag: str) -> None:
        self.out = config.parent / f"{tag}.out"
        self.err = config.parent / f"{tag}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [*BEATD, "--config", str(config), "run", "--log-format", log_format],
                stdout=out,
                stderr=err,
                env=_env(),
                cwd=config.parent,
            )

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(40)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)


def _listening_address(port: int) -> str:
    """The local address of the TCP socket listening on `port` (from /proc/net/tcp)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # LISTEN
                if len(address) == 8:
                    return socket.inet_ntoa(bytes.fromhex(address)[::-1])
                return address
    raise AssertionError(f"nothing listens on port {port}")


# -- passwords ------------------------------------------------------------------------


@pytest.mark.postgres
def test_passwords_never_shown_by_a_running_daemon(
    pg_url: str, tmp_path: Path, runs: list[Run]
) -> None:
    """PostgreSQL (trust auth: the password is ignored but travels in the URL) and an
    unreachable broker, both with passwords; two daemons, json and text logs."""
    migrate.upgrade(pg_url)
    user_at = pg_url.replace("postgres@", f"postgres:{DB_SECRET}@", 1)
    assert DB_SECRET in user_at
    port = _free_port()
    config = tmp_path / "beatd.toml"
    config.write_text(
        "[beatd]\n"
        f'database = "{user_at}"\n'
        f'broker = "amqp://beatd:{BROKER_SECRET}@127.0.0.1:1/%2F"\n'
        'lease = "2s"\n'
        f'http = ":{port}"\n'
        '[schedules.tick]\nevery = "1s"\ntask = "app.tick"\n'
    )
    leader = Run(config, "json", "json")
    runs.append(leader)
    _wait(lambda: "broker:" in leader.log(), 60, "the broker error in the json log")
    assert _listening_address(port) == "127.0.0.1"  # ":port" binds loopback only
    for path in ("/metrics", "/healthz"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
                body = reply.read().decode()
        except urllib.error.HTTPError as exc:  # /healthz may be 503 while the broker is away
            body = exc.read().decode()
        _assert_clean(path, body)
    assert "beatd_backlog" in body or path == "/healthz"

    # the standby logs as text; it gets no http (the port is the leader's)
    second = tmp_path / "standby.toml"
    second.write_text(config.read_text().replace(f'http = ":{port}"\n', ""))
    taken = _cli(config, "run")  # the same port again: one line, no traceback
    assert (taken.returncode, taken.stderr.splitlines()[-1]) == (
        1,
        f"beatd: http: cannot listen on 127.0.0.1:{port}: Address already in use",
    )
    _assert_clean("the failed run", taken.stderr)
    standby = Run(second, "text", "text")
    runs.append(standby)
    _wait(lambda: "beatd starting" in standby.log(), 60, "the text log")
    for argv in (
        ("status",),
        ("status", "--json"),
        ("list",),
        ("list", "--json"),
        ("history", "--json"),
        ("upcoming",),
        ("db", "current"),
        ("db", "upgrade"),
    ):
        done = _cli(config, *argv)
        _assert_clean(" ".join(argv), done.stdout + done.stderr)
        assert "Traceback" not in done.stderr
    report = json.loads(_cli(config, "status", "--json").stdout)
    assert report["broker"].startswith("error")  # unreachable, and says so without the secret
    assert "***" in report["database_url"] and "***" in report["broker_url"]
    assert [leader.stop(), standby.stop()] == [0, 0]
    for run in (leader, standby):
        _assert_clean(f"the {run.err.name} log", run.log())
        _assert_clean(f"the {run.out.name} stdout", run.stdout())
    assert "***" in leader.log()  # the URLs are logged, redacted


def test_passwords_never_shown_when_nothing_is_reachable(tmp_path: Path, runs: list[Run]) -> None:
    config = tmp_path / "beatd.toml"
    config.write_text(
        "[beatd]\n"
        f'database = "postgresql://beatd:{DB_SECRET}@127.0.0.1:1/beatd"\n'
        f'broker = "amqp://beatd:{BROKER_SECRET}@127.0.0.1:1/%2F"\n'
        '[schedules.tick]\nevery = "1s"\ntask = "app.tick"\n'
    )
    for argv in (
        ("status",),
        ("status", "--json"),
        ("list",),
        ("history",),
        ("add", "x", "--every", "5s", "--task", "t"),
        ("db", "upgrade"),
        ("trigger", "tick"),
    ):
        done = _cli(config, *argv)
        assert done.returncode != 0, argv
        assert "Traceback" not in done.stderr, done.stderr
        _assert_clean(" ".join(argv), done.stdout + done.stderr)
    daemon = Run(config, "json", "unreachable")
    runs.append(daemon)
    _wait(lambda: "cannot open the database" in daemon.log(), 60, "the database error")
    assert daemon.stop() == 0
    _assert_clean("the log", daemon.log())


# A password with every separator a URL has, each piece distinctive: none may show, whole,
# percent-encoded, decoded or cut at a separator (a driver takes the rest for a host).
SEPARATORS_SECRET = "Zq9x#Yk3w@Wm7q:Pv2z/Qr5j?Ts8k"
SEPARATORS_PIECES = ("Zq9x", "Yk3w", "Wm7q", "Pv2z", "Qr5j", "Ts8k")


def _assert_no_pieces(where: str, text: str) -> None:
    for piece in SEPARATORS_PIECES:
        assert piece not in text, f"{where} shows part of the password ({piece!r}):\n{text}"


@contextlib.contextmanager
def _pg_role(server: str, password: str) -> Iterator[str]:
    """A new role with `password`, owning a new database; yields its URL (encoded password)."""
    import sqlalchemy as sa

    name = f"beatd_sec_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    literal = password.replace("'", "''")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD '{literal}'"))
        conn.execute(sa.text(f'CREATE DATABASE "{name}" OWNER {name}'))
    try:
        host = server.split("@", 1)[1].rsplit("/", 1)[0]
        yield f"postgresql+psycopg://{name}:{quote(password, safe='')}@{host}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {name}"))
        admin.dispose()


def _rabbitmqctl(*argv: str) -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    done = subprocess.run(["rabbitmqctl", *argv], capture_output=True, timeout=60, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def _amqp_user(server: str, password: str) -> Iterator[tuple[str, bool]]:
    """A RabbitMQ user with `password` (rabbitmqctl); yields its URL and whether it exists.

    Without rabbitmqctl the URL names guest with this (wrong) password: the
    broker refuses it, and the error paths are what is checked.
    """
    name = f"beatd-sec-{uuid.uuid4().hex[:10]}"
    host = server.split("@", 1)[1].split("/", 1)[0]
    created = _rabbitmqctl("add_user", name, password) and _rabbitmqctl(
        "set_permissions", "-p", "/", name, ".*", ".*", ".*"
    )
    if not created and os.environ.get("BEATD_REQUIRE_SERVICES") == "1":
        pytest.fail("rabbitmqctl cannot add a user, and BEATD_REQUIRE_SERVICES=1")
    user = name if created else "guest"
    try:
        yield f"amqp://{user}:{quote(password, safe='')}@{host}/%2F", created
    finally:
        if created:
            _rabbitmqctl("delete_user", name)


# Every command, with arguments that reach the database (and the broker for status).
COMMANDS: list[list[str]] = [
    ["validate"],
    ["upcoming"],
    ["upcoming", "--json"],
    ["list"],
    ["list", "--json"],
    ["add", "api", "--every", "1h", "--task", "t"],
    ["pause", "api"],
    ["resume", "api"],
    ["trigger", "api"],
    ["backfill", "api", "--from", "2024-01-01T00:00:00Z", "--to", "2024-01-01T02:00:00Z"],
    ["history"],
    ["history", "--json"],
    ["remove", "api"],
    ["db", "current"],
    ["db", "upgrade"],
    ["status"],
    ["status", "--json"],
    ["import", "apscheduler", "{database}"],  # the secret URL on the command line
    ["web", "--bind", "0.0.0.0:0"],  # refused (no BEATD_WEB_TOKEN): says so, exits 2
]

# One process runs the commands one after another through beatd's entry point (what the
# `beatd` script calls), so the sweep does not pay an interpreter start per command.
_SWEEP = """
import contextlib, io, json, sys
from beatd.cli.main import main
done = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    done.append([argv, code, out.getvalue(), err.getvalue()])
print(json.dumps(done))
"""


def _sweep(
    config: Path, commands: list[list[str]], env: dict[str, str] | None = None
) -> dict[str, tuple[int, str, str]]:
    """{command: (exit code, stdout, stderr)} for each command run against `config`."""
    from beatd.config import load_settings
    from beatd.errors import ConfigError

    try:
        database = load_settings(config, env=env or _env()).database
    except ConfigError:  # a config refused whole: every command says so, import included
        database = "sqlite:///unused.db"
    argvs = [
        ["--config", str(config), *(a.replace("{database}", database) for a in argv)]
        for argv in commands
    ]
    done = subprocess.run(
        [sys.executable, "-c", _SWEEP, json.dumps(argvs)],
        capture_output=True,
        text=True,
        env=env or _env(),
        cwd=config.parent,
        timeout=300,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return {
        " ".join(argv[2:]): (code, out, err) for argv, code, out, err in json.loads(done.stdout)
    }


def test_every_command_is_in_the_password_sweep() -> None:
    from beatd.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) - {"run"} == {argv[0] for argv in COMMANDS}


def _metric(port: int, name: str) -> float:
    """A metric's value (0 while the daemon is not serving yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    except urllib.error.URLError:
        return 0.0
    values = [line.split()[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(values[0]) if values else 0.0


@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("store", "log_format"),
    [
        ("sqlite", "text"),
        pytest.param("postgres", "json", marks=pytest.mark.postgres),
        pytest.param("postgres-query", "text", marks=pytest.mark.postgres),
    ],
)
def test_a_password_with_every_url_separator_never_shows(
    store: str,
    log_format: str,
    amqp_server: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    runs: list[Run],
) -> None:
    """Real PostgreSQL and RabbitMQ accounts whose password holds `# @ : / ?`: every command,
    a daemon running (a reload included), /metrics, /healthz: no output shows any of it."""
    import pika

    with contextlib.ExitStack() as stack:
        database = f"sqlite:///{tmp_path}/beatd.db"
        if store.startswith("postgres"):
            server = request.getfixturevalue("pg_server")
            database = stack.enter_context(_pg_role(server, SEPARATORS_SECRET))
            if store == "postgres-query":  # the password as a query parameter instead
                user_info, rest = database.split("://", 1)[1].split("@", 1)
                user, encoded = user_info.split(":", 1)
                database = f"postgresql+psycopg://{user}@{rest}?password={encoded}"
        broker, broker_works = stack.enter_context(_amqp_user(amqp_server, SEPARATORS_SECRET))
        queue = f"beatd-sec-{uuid.uuid4().hex[:10]}"
        port = _free_port()
        config = tmp_path / "beatd.toml"
        config.write_text(
            f'[beatd]\ndatabase = "{database}"\nbroker = "{broker}"\nlease = "2s"\n'
            f'http = ":{port}"\nlog_format = "{log_format}"\n'
            f'[schedules.tick]\nevery = "1s"\ntask = "app.tick"\nqueue = "{queue}"\n'
        )
        daemon = Run(config, log_format, "daemon")
        runs.append(daemon)
        if broker_works:
            sent = 'beatd_fires_sent_total{partition="0"}'  # P = 1: the one partition, "0"
            _wait(lambda: _metric(port, sent) > 0, 60, "a sent fire")
        else:
            _wait(lambda: "authentication failed" in daemon.log(), 60, "the broker refusing")
        daemon.proc.send_signal(signal.SIGHUP)
        _wait(lambda: daemon.log().count("schedules loaded") == 2, 30, "the reload")
        outputs = {}
        for path in ("/metrics", "/healthz"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
                    outputs[path] = reply.read().decode()
            except urllib.error.HTTPError as exc:
                outputs[path] = exc.read().decode()
        for command, (_code, out, err) in _sweep(config, COMMANDS).items():
            outputs[command] = out + err
            assert "Traceback" not in err, (command, err)
        assert daemon.stop() == 0
        outputs["the daemon's log"] = daemon.log()
        outputs["the daemon's stdout"] = daemon.stdout()
        if broker_works:
            connection = pika.BlockingConnection(pika.URLParameters(amqp_server))
            connection.channel().queue_delete(queue)
            connection.close()
    for where, text in outputs.items():
        _assert_no_pieces(where, text)
    report = json.loads(outputs["status --json"])
    assert report["database"] == "ok"
    assert report["broker"] == "ok" if broker_works else report["broker"].startswith("error")
    assert "***" in report["broker_url"]
    assert ("***" in report["database_url"]) == store.startswith("postgres")
    assert "***" in outputs["the daemon's log"]  # the URLs are logged, redacted


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BEATD_BROKER", f"amqp://guest:{SEPARATORS_SECRET}@127.0.0.1:5672/%2F"),
        ("BEATD_DATABASE", f"postgresql://beatd:{SEPARATORS_SECRET}@127.0.0.1:5432/beatd"),
        ("BEATD_DATABASE", f"postgresql://beatd@127.0.0.1:5432/beatd?password={SEPARATORS_SECRET}"),
        (
            "BEATD_BROKER",
            "amqps://guest@127.0.0.1:1/?ssl_options="
            + quote(repr({"certfile": "/nonexistent", "password": SEPARATORS_SECRET}), safe=""),
        ),
    ],
    ids=["broker-raw", "database-raw", "database-query-raw", "broker-ssl-options"],
)
def test_a_raw_password_with_every_url_separator_never_shows(
    tmp_path: Path, key: str, value: str
) -> None:
    """Written without percent-encoding, such a URL is refused (or fails) in one line that
    names the URL without any piece of its password; so do bad amqps ssl_options."""
    config = tmp_path / "beatd.toml"
    config.write_text("")
    env = {**_env(), key: value}
    commands = [["validate"], ["status", "--json"], ["list"], ["history"], ["trigger", "x"]]
    for command, (_code, out, err) in _sweep(config, commands, env).items():
        _assert_no_pieces(command, out + err)
        assert "Traceback" not in err, err
    run = subprocess.run(
        [*BEATD, "--config", str(config), "run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode in (1, 2) and "Traceback" not in run.stderr, run.stderr
    _assert_no_pieces("run", run.stdout + run.stderr)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BEATD_BROKER", f"amqp://u:{BROKER_SECRET}@h:70000/"),
        ("BEATD_BROKER", f"redis://u:{BROKER_SECRET}@h/"),
        ("BEATD_DATABASE", f"nosuchdb://u:{DB_SECRET}@h/db"),
        ("BEATD_DATABASE", f"postgresql://u:{DB_SECRET}@h:notaport/db"),
    ],
    ids=["broker-bad-port", "broker-bad-scheme", "database-bad-dialect", "database-bad-port"],
)
def test_passwords_never_shown_in_config_errors(tmp_path: Path, key: str, value: str) -> None:
    config = tmp_path / "beatd.toml"
    config.write_text("")
    done = subprocess.run(
        [*BEATD, "--config", str(config), "validate"],
        capture_output=True,
        text=True,
        env={**_env(), key: value},
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"beatd: {key}:"), done.stderr
    _assert_clean("the error", done.stderr)


# -- safe parsing -----------------------------------------------------------------------


class _Boom:
    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.canary}",))


@pytest.mark.parametrize("payload", ["yaml", "pickle", "python"])
def test_the_config_is_toml_and_nothing_else(tmp_path: Path, payload: str) -> None:
    import pickle

    canary = tmp_path / "pwned"
    config = tmp_path / "beatd.toml"
    if payload == "yaml":
        config.write_text(f'!!python/object/apply:os.system ["touch {canary}"]\n')
    elif payload == "pickle":
        config.write_bytes(pickle.dumps(_Boom(canary)))
    else:
        config.write_text(f"__import__('os').system('touch {canary}')\n")
    done = _cli(config, "validate")
    assert done.returncode == 2
    assert "invalid TOML" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not canary.exists()


_UNSAFE_MODULES = {"pickle", "marshal", "shelve", "yaml", "dill", "subprocess", "jsonpickle"}
_UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


# `beatd import apscheduler` reads APScheduler's pickled job state; its unpickler rebuilds
# nothing but what that state holds (tests/importers/test_import_apscheduler.py).
_READS_PICKLES = {(REPO / "beatd" / "importers" / "apscheduler.py", "pickle")}


def test_beatd_imports_no_unsafe_parser_and_calls_no_eval() -> None:
    """In addition to the behavioural tests: beatd's source never reaches for them."""
    found = []
    for path in sorted((REPO / "beatd").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [
                f"{path}: import {n}"
                for n in names
                if n.split(".")[0] in _UNSAFE_MODULES and (path, n) not in _READS_PICKLES
            ]
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in _UNSAFE_CALLS:
                    found.append(f"{path}:{node.lineno}: {func.id}()")
                if isinstance(func, ast.Attribute) and func.attr in ("system", "popen"):
                    found.append(f"{path}:{node.lineno}: .{func.attr}()")
    assert not found
    config_source = (REPO / "beatd" / "config.py").read_text()
    assert "tomllib.load" in config_source


# -- task names and args are data ---------------------------------------------------------


def test_task_names_and_args_are_published_verbatim_and_nothing_runs(
    tmp_path: Path, runs: list[Run]
) -> None:
    canaries = [tmp_path / f"pwned{i}" for i in range(5)]
    task = f"__import__('os').system('touch {canaries[0]}')"
    args = [f"$(touch {canaries[1]})", f"`touch {canaries[2]}`", "'; DROP TABLE fires; --"]
    kwargs = {"cmd": f"; touch {canaries[3]}", "{{7*7}}": "${jndi:ldap://x}"}
    name = f"pwn; touch {canaries[4]}"
    url = f"sqlite:///{tmp_path}/beatd.db"
    migrate.upgrade(url)
    config = tmp_path / "beatd.toml"
    document = {
        "beatd": {"database": url, "broker": "stdout://", "format": "celery"},
        "schedules": {name: {"every": "1s", "task": task, "args": args, "kwargs": kwargs}},
    }
    settings_from_document(document, {})  # valid as data
    config.write_text(_toml(document))
    daemon = Run(config, "json", "daemon")
    runs.append(daemon)
    line = _wait(lambda: daemon.stdout().splitlines()[:1], 60, "a published message")[0]
    assert daemon.stop() == 0
    message = json.loads(line)
    assert message["schedule"] == name
    assert message["headers"]["task"] == task
    assert message["body"][0] == args and message["body"][1] == kwargs
    assert not any(c.exists() for c in canaries), "something ran"
    done = _cli(config, "history", "--json")
    assert json.loads(done.stdout)[0]["schedule"] == name  # the fires table survived


def _toml(document: dict[str, Any]) -> str:
    """A tiny TOML writer for this test's document (strings, arrays, inline tables)."""

    def value(v: Any) -> str:
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a valid TOML basic string
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"

    lines = ["[beatd]", *(f"{k} = {value(v)}" for k, v in document["beatd"].items())]
    for name, table in document["schedules"].items():
        lines.append(f"[schedules.{json.dumps(name)}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# -- the service ---------------------------------------------------------------------------


def test_the_systemd_unit_runs_unprivileged_and_hardened() -> None:
    unit = read_unit()

    def one(key: str) -> str:
        values = unit.get(f"Service.{key}", [])
        assert values, f"{key}= is missing"
        return values[-1]

    dynamic = unit.get("Service.DynamicUser", ["no"])[-1] == "yes"
    user = unit.get("Service.User", [""])[-1]
    assert dynamic or user, "no User= and no DynamicUser=yes: it would run as root"
    assert user not in ("root", "0")
    assert unit.get("Service.Group", ["beatd"])[-1] not in ("root", "0")
    for key, wanted in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
    }.items():
        assert one(key) == wanted, key
    assert one("CapabilityBoundingSet") == "", "capabilities are not dropped"
    assert unit.get("Service.AmbientCapabilities", [""])[-1] == ""
    families = one("RestrictAddressFamilies").split()
    assert set(families) <= {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "@system-service" in unit.get("Service.SystemCallFilter", [])
    assert one("Type") == "notify" and one("Restart") == "on-failure"
    assert one("ExecStart").split()[1:3] == ["run", "--config"]
    assert int(one("UMask"), 8) & 0o007 == 0o007, "files readable by others"


# -- the HTTP endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize("written", ["9464", ":9464", " :9464 "])
def test_http_without_a_host_means_loopback(written: str) -> None:
    assert check_http(written) == "127.0.0.1:9464"


def test_http_is_off_by_default_and_binds_loopback() -> None:
    assert settings_from_document({}, {}).http is None
    port = _free_port()
    bind = settings_from_document({"beatd": {"http": f":{port}"}}, {}).http
    assert bind == f"127.0.0.1:{port}"
    server = HttpServer(bind, Metrics(), lambda: [])
    try:
        assert server.address[0] == "127.0.0.1"
        assert _listening_address(server.port) == "127.0.0.1"
    finally:
        server.close()
