"""Hostile input (issue 16, items 1, 2, 3, 6 and 7): refused at the door, contained after it.

What cannot be stored (PostgreSQL's column widths) or sent (AMQP's short
strings, field-table types, RabbitMQ's frame_max) is refused with one line
naming the schedule and the key, exit 2, the same way by `add`, the Python
API, `validate` and the loading a reload does (one validation path: codec.py).
What is accepted at the bounds is stored on PostgreSQL and confirmed by a
real RabbitMQ. A fire an older beatd recorded that no frame can carry fails
alone while a healthy every-1s schedule keeps its pace; a reload with an
instant that overflows keeps the daemon running. `backfill` and `upcoming`
do bounded work. Every test here failed on the code before these checks.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pika
import pytest

from beatd import timing
from beatd.api import Beat
from beatd.cli.main import main
from beatd.config import Settings, load_settings
from beatd.daemon import Daemon
from beatd.errors import ConfigError
from beatd.ids import fire_id
from beatd.model import Every, Format, Outcome, Schedule
from beatd.publish.amqp import AmqpPublisher
from beatd.publish.amqp_wire import header_frame, properties
from beatd.publish.base import Status
from beatd.publish.messages import FRAME_MAX, build_message
from beatd.store.base import Decision
from beatd.store.memory import MemoryStore
from beatd.store.sql import migrate

REPO = Path(__file__).resolve().parent.parent
OVERFLOW = "9999-12-31T23:00:00-14:00"  # year 10000 in UTC: datetime overflows
BIG_INTS = [1] * 30_000  # 60 KB of JSON (under the 64 KiB cap), 270 KB as an AMQP array


@dataclasses.dataclass(frozen=True)
class Case:
    options: dict[str, Any]  # schedule options, as the API takes them (kind: every = "1m")
    key: str  # the key the one problem line names
    says: str  # and a fragment of what it says
    toml: bool = True  # expressible in TOML (a lone surrogate is not)


CASES = {
    # item 1: lengths the schema and AMQP allow
    "routing-key-300": Case(
        {"exchange": "amq.topic", "routing_key": "r" * 300}, "routing_key", "255 bytes"
    ),
    "queue-300": Case({"queue": "q" * 300}, "queue", "255 bytes"),
    "exchange-300": Case({"exchange": "x" * 300}, "exchange", "255 bytes"),
    "routing-key-256-bytes-of-utf8": Case({"routing_key": "é" * 128}, "routing_key", "got 256"),
    "task-256": Case({"task": "t" * 256}, "task", "at most 255 characters"),
    # item 2: a message no frame carries
    "task-200000": Case({"task": "t" * 200_000}, "task", "at most 255 characters"),
    "headers-over-frame-max": Case({"headers": {"k": BIG_INTS}}, "headers", "frame_max of 131072"),
    "expires-over-10-years": Case({"expires": "3651d"}, "expires", "at most 3650d"),
    "every-of-100000-characters": Case(
        {"every": "x" * 100_000}, "every", "expected a duration"
    ),  # found by fuzz/fuzz_message.py: the line quoted all of it
    # item 3: instants whose offset overflows
    "at-overflow": Case({"at": OVERFLOW}, "at", "out of range"),
    "start-overflow": Case({"start": OVERFLOW}, "start", "out of range"),
    "end-overflow": Case({"end": OVERFLOW}, "end", "out of range"),
    "anchor-overflow": Case({"anchor": OVERFLOW}, "anchor", "out of range"),
    # item 7: headers AMQP cannot carry, headers beatd sets itself
    "header-float": Case({"headers": {"x": 1.5}}, "headers.x", "1.5 is a number with a fraction"),
    "header-int-over-64-bits": Case({"headers": {"x": 2**64}}, "headers.x", "64 bits"),
    "header-int-under-64-bits": Case({"headers": {"x": -(2**63) - 1}}, "headers.x", "64 bits"),
    "header-nested-float": Case({"headers": {"a": {"b": [1, 0.5]}}}, "headers.a.b", "fraction"),
    "header-name-256-bytes": Case({"headers": {"k" * 256: 1}}, "headers.kkk", "255 bytes"),
    "header-nested-name-256-bytes": Case(
        {"headers": {"a": {"é" * 128: 1}}}, "headers.a.ééé", "255 bytes"
    ),
    "header-lone-surrogate": Case(
        {"headers": {"x": "\ud800"}}, "headers", "not valid Unicode", toml=False
    ),
    "header-reserved-task": Case({"headers": {"task": "evil"}}, "headers.task", "beatd sets"),
    "header-reserved-id": Case({"headers": {"id": "x"}}, "headers.id", "beatd sets"),
    "header-reserved-root-id": Case({"headers": {"root_id": "x"}}, "headers.root_id", "beatd sets"),
    "header-reserved-retries": Case({"headers": {"retries": 3}}, "headers.retries", "beatd sets"),
    "header-reserved-in-json-format": Case(
        {"format": "json", "headers": {"beatd-manual": False}}, "headers.beatd-manual", "beatd sets"
    ),
    "kwargs-lone-surrogate": Case(
        {"kwargs": {"x": "\udfff"}}, "kwargs", "not valid Unicode", toml=False
    ),
}
PARAMS = [pytest.param(case, id=name) for name, case in CASES.items()]
TOML_PARAMS = [pytest.param(case, id=name) for name, case in CASES.items() if case.toml]


def _table(case: Case) -> dict[str, Any]:
    table: dict[str, Any] = {"task": "app.tasks.t"} | case.options
    if "at" not in table:
        table.setdefault("every", "1m")
    return table


def _toml(value: Any) -> str:
    """A TOML value (TOML's basic strings, integers and floats are JSON's)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _config(path: Path, database: str, schedules: dict[str, dict[str, Any]]) -> Path:
    lines = ["[beatd]", f"database = {json.dumps(database)}"]
    for name, table in schedules.items():
        lines.append(f"[schedules.{json.dumps(name)}]")
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _flags(table: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in table.items():
        text = value if isinstance(value, str) else json.dumps(value)
        argv += [f"--{key.replace('_', '-')}", text]
    return argv


def _one_line(err: str, key: str, says: str, schedule: str = "poison") -> None:
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"beatd: schedule {schedule!r}: {key}"), lines[0]
    assert says in lines[0], lines[0]
    assert len(lines[0]) < 400, "a problem line is not short"
    assert "Traceback" not in err


@pytest.fixture
def api_config(tmp_path: Path) -> Path:
    """A config with no schedules over a migrated SQLite database."""
    url = f"sqlite:///{tmp_path}/beatd.db"
    migrate.upgrade(url)
    return _config(tmp_path / "api.toml", url, {})


# -- item 1, 2, 3 and 7: one validation path ---------------------------------------


@pytest.mark.parametrize("case", PARAMS)
def test_add_refuses_it_in_one_line(
    case: Case, api_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _table(case)
    kind = "at" if "at" in table else "every"
    argv = ["--config", str(api_config), "add", "poison", f"--{kind}", table.pop(kind)]

    assert main([*argv, *_flags(table)]) == 2

    err = capsys.readouterr().err
    _one_line(err, case.key, case.says)
    assert main(["--config", str(api_config), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("case", PARAMS)
def test_the_api_refuses_it_with_a_config_error(case: Case, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/beatd.db"
    migrate.upgrade(url)
    with Beat(database_url=url) as beat:
        with pytest.raises(ConfigError) as info:
            beat.add("poison", **_table(case))
        assert info.value.exit_code == 2
        assert len(info.value.problems) == 1
        assert info.value.problems[0].startswith(f"schedule 'poison': {case.key}")
        assert case.says in str(info.value)
        assert beat.list() == []


@pytest.mark.parametrize("case", TOML_PARAMS)
def test_validate_and_a_reload_refuse_it_in_the_file(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy = {"every": "1s", "task": "app.tasks.healthy"}
    config = _config(
        tmp_path / "beatd.toml", "sqlite:///never.db", {"healthy": healthy, "poison": _table(case)}
    )

    assert main(["--config", str(config), "validate"]) == 2
    _one_line(capsys.readouterr().err, case.key, case.says)
    with pytest.raises(ConfigError):  # what Daemon.reload calls: "reload failed, keeping ..."
        load_settings(config)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_overflowing_instant_in_the_file_is_one_line_for_the_real_script(
    command: str, tmp_path: Path
) -> None:
    config = _config(
        tmp_path / "beatd.toml",
        f"sqlite:///{tmp_path}/beatd.db",
        {"poison": {"at": OVERFLOW, "task": "t"}},
    )
    done = subprocess.run(
        [sys.executable, "-m", "beatd.cli.main", "--config", str(config), command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    _one_line(done.stderr, "at", "out of range")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        pytest.param(["upcoming", "--after", OVERFLOW], "--after", id="upcoming-after"),
        pytest.param(["upcoming", "--until", OVERFLOW], "--until", id="upcoming-until"),
        pytest.param(
            ["backfill", "s", "--from", "2026-01-01T00:00:00Z", "--to", OVERFLOW],
            "--to",
            id="backfill-to",
        ),
        pytest.param(
            ["backfill", "s", "--from", OVERFLOW, "--to", OVERFLOW], "--from", id="backfill-from"
        ),
        pytest.param(
            ["backfill", "s", "--from", "0001-01-01T00:00:00+14:00", "--to", "2026-01-01"],
            "--from",
            id="backfill-from-before-year-1",
        ),
    ],
)
def test_an_overflowing_instant_on_the_command_line_is_one_line(
    argv: list[str], flag: str, api_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Beat.from_config(api_config) as beat:
        beat.add("s", every="1h", task="t")

    assert main(["--config", str(api_config), *argv]) == 2

    err = capsys.readouterr().err
    assert err.startswith(f"beatd: {flag}: ") and "out of range" in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_backfill_of_fires_that_would_expire_after_9999_is_one_line(
    api_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Beat.from_config(api_config) as beat:
        beat.add("e", every="1d", task="t", expires="3650d")
    argv = ["backfill", "e", "--from", "9997-01-01T00:00:00Z", "--to", "9997-01-02T00:00:00Z"]

    assert main(["--config", str(api_config), *argv]) == 2

    _one_line(capsys.readouterr().err, "expires", "would expire after 9999", schedule="e")


def test_the_api_refuses_overflowing_instants(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/beatd.db"
    migrate.upgrade(url)
    far = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14)))
    with Beat(database_url=url) as beat:
        beat.add("s", every="1h", task="t")
        for call in (
            lambda: beat.upcoming(after=far),
            lambda: beat.upcoming(until=far),
            lambda: beat.backfill("s", datetime(2026, 1, 1, tzinfo=UTC), far),
            lambda: beat.add("t", at=far, task="t"),
        ):
            with pytest.raises(ConfigError, match="out of range"):
                call()


# -- accepted at the bounds: stored on PostgreSQL, confirmed by RabbitMQ ----------------


@pytest.fixture
def amqp_queue(amqp_server: str) -> Iterator[tuple[Any, str]]:
    """A plain channel and a unique durable queue, its name 255 bytes long (deleted afterwards)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_server))
    channel = connection.channel()
    name = f"beatd-hostile-{uuid.uuid4().hex}-".ljust(255, "q")
    channel.queue_declare(name, durable=True)
    try:
        yield channel, name
    finally:
        channel.queue_delete(name)
        connection.close()


@pytest.mark.rabbitmq
def test_what_is_accepted_at_every_bound_is_stored_and_sent(
    db_url: str, amqp_server: str, amqp_queue: tuple[Any, str]
) -> None:
    channel, queue = amqp_queue
    name = "n" * 200
    headers = {
        "k" * 255: -(2**63),
        "max": 2**63 - 1,
        "nested": {"é" * 127: [True, None, "x", {"deep": 1}]},
        "big": "v" * 60_000,
    }
    migrate.upgrade(db_url)
    with Beat(database_url=db_url) as beat:
        beat.add(name, every="1m", task="t" * 255, queue=queue, headers=headers, kwargs={"a": 1})
        beat.add("json", every="1m", task="t", queue=queue, format="json", headers={"task": "ok"})
        fires = [beat.trigger(name), beat.trigger("json")]  # PostgreSQL stores the outbox rows
        lease = beat.store.acquire("test", timedelta(seconds=30), "token")
        assert lease is not None
        pending = beat.store.claim(lease, beat.clock.now() + timedelta(seconds=1), 10)
        assert sorted(m.fire_id for m in pending) == sorted(fires)
    publisher = AmqpPublisher(amqp_server, name=f"beatd-test-{uuid.uuid4().hex[:12]}")
    try:
        results = publisher.publish(pending, datetime.now(UTC))
    finally:
        publisher.close()
    assert [r.status for r in results] == [Status.CONFIRMED] * 2
    got = {channel.basic_get(queue, auto_ack=True)[1].message_id for _ in fires}
    assert got == set(fires)


def test_a_definition_an_older_beatd_stored_keeps_loading(db_url: str) -> None:
    # What the door refuses now may be in a database already (SQLite stored any length,
    # and only the outbox's columns are narrow on PostgreSQL): reading it back must not
    # break `list` or the leader's due query (it is checked when written, not when read).
    migrate.upgrade(db_url)
    old = Schedule(
        "old",
        Every(timedelta(hours=1)),
        "t",
        end=datetime(9999, 6, 1, tzinfo=UTC),
        headers={"task": "ignored", "ratio": 0.5},
        routing_key="r" * 300,  # SQLite stored it
    )
    with Beat(database_url=db_url) as beat:
        beat.store.put(old, datetime(2026, 1, 1, tzinfo=UTC), replace=False)
        assert [info.schedule for info in beat.list()] == [old]
        assert [s.schedule for s in beat.store.due(datetime(2026, 1, 2, tzinfo=UTC), 10)] == [old]
        with pytest.raises(ConfigError, match="out of range"):
            beat.add("new", every="1h", task="t", end="9999-06-01T00:00:00Z")


def test_without_headers_no_schedule_can_outgrow_a_frame() -> None:
    # messages.frame_problem encodes only schedules with headers: every other
    # part of the header frame is bounded. The largest (4-byte characters in
    # every name, argument reprs cut at 1024 characters) stays far under it.
    wide = "\U0001f600"
    schedule = Schedule(
        name=wide * 200,
        spec=Every(timedelta(seconds=1)),
        task=wide * 255,
        queue=wide * 63,
        exchange=wide * 63,
        routing_key=wide * 63,
        args=(wide * 16_000,),
        kwargs={wide: wide * 16_000},
        expires=timedelta(days=3650),
        priority=255,
    )
    at = datetime(2000, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)
    for fmt in Format:
        message = build_message(dataclasses.replace(schedule, format=fmt), at, at, manual=True)
        frame = header_frame(1, message, properties(message, at, 315_360_000_000), 1 << 30)
        assert len(frame) < FRAME_MAX // 8


# -- item 2 and 3 after the door: contained to the one fire, the daemon stays up --------


def _wait_for(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class _Running:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = self.daemon.run()
        except BaseException as exc:  # the old reload: an OverflowError ended run()
            self.error = exc

    def stop(self) -> int | None:
        self.daemon.request_stop()
        self.thread.join(20)
        assert not self.thread.is_alive()
        assert self.error is None, repr(self.error)
        return self.code


def _pace(channel: Any, queue: str, count: int) -> list[datetime]:
    """The scheduled instants of the next `count` messages of `queue`, waiting for them."""
    instants: list[datetime] = []

    def more() -> bool:
        _method, props, _body = channel.basic_get(queue, auto_ack=True)
        if props is not None:
            instants.append(datetime.fromisoformat(props.headers["beatd-scheduled-for"]))
        return len(instants) >= count

    _wait_for(more, f"{count} fires of the healthy schedule")
    return instants


@pytest.mark.rabbitmq
def test_a_recorded_fire_no_frame_carries_fails_alone_and_the_healthy_keep_their_pace(
    amqp_server: str, amqp_queue: tuple[Any, str]
) -> None:
    # Issue 16 #2: an older beatd accepted task="t" * 200_000 and recorded its fire;
    # RabbitMQ closed the connection on its header frame and nothing was delivered.
    channel, queue = amqp_queue
    healthy = Schedule("healthy", Every(timedelta(seconds=1)), "app.healthy", queue=queue)
    store = MemoryStore()
    settings = Settings(database="memory://", lease=timedelta(seconds=3), schedules=(healthy,))
    publisher = AmqpPublisher(amqp_server, name=f"beatd-test-{uuid.uuid4().hex[:12]}")
    running = _Running(Daemon(settings, store, publisher))
    try:
        _pace(channel, queue, 1)
        poison = dataclasses.replace(healthy, name="big", task="t" * 200_000)
        now = datetime.now(UTC)
        message = build_message(poison, now, now, manual=True)
        store.record(
            None, [Decision("big", now, fire_id("big", now), Outcome.PENDING, None, message)], []
        )

        _wait_for(lambda: store.history("big", 1)[0].outcome is Outcome.FAILED, "the poison failed")
        instants = _pace(channel, queue, 4)
    finally:
        assert running.stop() == 0
        publisher.close()
    reason = store.history("big", 1)[0].reason or ""
    assert reason.startswith("cannot be sent: its header frame"), reason
    assert [b - a for a, b in itertools.pairwise(instants)] == [timedelta(seconds=1)] * 3


@pytest.mark.parametrize("case", ["at-overflow", "start-overflow", "headers-over-frame-max"])
def test_a_reload_of_a_poisoned_file_keeps_the_daemon_and_its_schedules(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 16 #3: SIGHUP with `at = "9999-12-31T23:00:00-14:00"` ended the daemon.
    never = f"sqlite:///{tmp_path}/never.db"  # the daemon gets its store directly
    config = _config(tmp_path / "beatd.toml", never, {"a": {"every": "1s", "task": "t.a"}})
    store = MemoryStore()
    published: list[str] = []

    class Recording:
        def publish(self, messages: Any, now: datetime) -> list[Any]:
            from beatd.publish.base import Result

            published.extend(m.schedule for m in messages)
            return [Result(m.fire_id, Status.CONFIRMED) for m in messages]

        def prepare(self, messages: Any) -> None: ...

        def check(self) -> str | None:
            return None

        def close(self) -> None: ...

    running = _Running(Daemon(load_settings(config), store, Recording()))
    try:
        _wait_for(lambda: published.count("a") >= 1, "the first fire")
        _config(config, never, {"a": {"every": "1s", "task": "t.a"}, "p": _table(CASES[case])})
        with caplog.at_level(logging.ERROR, "beatd"):
            running.daemon.request_reload()
            _wait_for(lambda: caplog.records, "the reload error")
        fired = published.count("a")
        _wait_for(lambda: published.count("a") >= fired + 2, "two more fires after the reload")
        assert running.thread.is_alive() and running.daemon.healthy()
    finally:
        assert running.stop() == 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("reload failed, keeping the last good schedules: schedule 'p': ")
    assert [s.schedule.name for s in store.all()] == ["a"]


# -- item 6: bounded work ---------------------------------------------------------------


def test_backfill_refuses_a_range_over_its_cap_before_enumerating_it(api_config: Path) -> None:
    # History kept for 100 years, so the range is not refused for predating it.
    api_config.write_text(api_config.read_text() + 'keep_history = "36500d"\n')
    with Beat.from_config(api_config) as beat:
        beat.add("s", every="1s", task="t")
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "beatd.cli.main",
            "--config",
            str(api_config),
            "backfill",
            "s",
            "--from",
            "2000-01-01T00:00:00Z",
            "--to",
            "2026-01-01T00:00:00Z",
        ],
        capture_output=True,
        text=True,
        timeout=60,  # the old code enumerated 820 million instants first, 8 MB/s
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("beatd: backfill: more than 100000 instants from 2000-01-01")
    assert took < 10, f"refusing took {took:.1f}s"


def test_backfill_counts_an_intervals_instants_to_one_past_its_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/beatd.db"
    migrate.upgrade(url)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)  # history is kept
    with Beat(database_url=url) as beat:
        beat.add("s", every="1s", task="t")
        done = beat.backfill("s", start, start + timedelta(seconds=2))
        assert (done.instants, len(done.recorded)) == (3, 3)  # both ends count
        walked: list[object] = []
        fires_between = timing.fires_between
        monkeypatch.setattr(
            timing, "fires_between", lambda *a: walked.append(a) or fires_between(*a)
        )
        with pytest.raises(ConfigError, match="more than 100000"):  # 100,001 instants
            beat.backfill("s", start, start + timedelta(seconds=100_000))
        assert walked == [], "an interval's instants were enumerated"


def test_upcoming_returns_at_most_its_cap(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/beatd.db"
    migrate.upgrade(url)
    with Beat(database_url=url) as beat:
        beat.add("s", every="1s", task="t")
        assert len(beat.upcoming(limit=100_000)) == 100_000
        with pytest.raises(ConfigError, match="limit: must be from 0 to 100000"):
            beat.upcoming(limit=100_001)


def test_upcoming_words_each_schedule_once_not_each_fire(
    api_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with Beat.from_config(api_config) as beat:
        beat.add("a", cron="* * * * * *", task="t")
        beat.add("b", every="1s", task="t")
    worded: list[object] = []
    describe = timing.describe
    monkeypatch.setattr(timing, "describe", lambda spec: worded.append(spec) or describe(spec))

    assert main(["--config", str(api_config), "upcoming", "--limit", "2000"]) == 0

    assert len(capsys.readouterr().out.splitlines()) == 2001
    assert len(worded) == 2


@pytest.mark.rabbitmq
def test_a_full_queue_delays_only_its_own_fires(
    amqp_server: str, amqp_queue: tuple[Any, str]
) -> None:
    # Issue 16 #5: behind a queue with x-max-length and reject-publish, the nack backed
    # off the whole relay: every other schedule ran 0.5-4.5 s late, even once removed.
    channel, queue = amqp_queue
    full = f"beatd-full-{uuid.uuid4().hex}"
    channel.queue_declare(
        full, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    channel.basic_publish("", full, b"filler")  # full from the start
    healthy = Schedule("healthy", Every(timedelta(seconds=1)), "app.healthy", queue=queue)
    blocked = Schedule("blocked", Every(timedelta(seconds=1)), "app.blocked", queue=full)
    store = MemoryStore()
    settings = Settings(
        database="memory://", lease=timedelta(seconds=3), schedules=(healthy, blocked)
    )
    publisher = AmqpPublisher(amqp_server, name=f"beatd-test-{uuid.uuid4().hex[:12]}")
    running = _Running(Daemon(settings, store, publisher))
    lags: list[float] = []
    try:
        _wait_for(
            lambda: running.daemon.metrics.broker_errors._value.get() >= 3,
            "the full queue refusing fires (nacks)",
        )
        channel.queue_purge(queue)  # measure from here: what waited in the queue is not late

        def more() -> bool:
            _method, props, _body = channel.basic_get(queue, auto_ack=True)
            if props is not None:
                at = datetime.fromisoformat(props.headers["beatd-scheduled-for"])
                lags.append((datetime.now(UTC) - at).total_seconds())
            return len(lags) >= 5

        _wait_for(more, "five fires of the healthy schedule while the other queue is full")
    finally:
        assert running.stop() == 0
        publisher.close()
        channel.queue_delete(full)
    assert max(lags) < 0.5, lags  # on time: a nack costs the healthy schedule nothing
    assert running.daemon.relay.failures == 0  # the broker itself was never backed off
    assert {r.outcome for r in store.history("blocked", 100)} == {Outcome.PENDING}
