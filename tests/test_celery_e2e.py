"""beatd-built messages, published by AmqpPublisher, executed by a real Celery 5 worker.

The worker runs as a subprocess (`celery worker --pool=solo`) on a queue of
its own, from Celery's own venv (tests/celery_env.py: Celery's pin would
downgrade beatd's dependencies here); its task writes what it got to a file,
which the test polls with a deadline. A message whose `expires` has passed
reaches the worker (its AMQP TTL is still running) and must be revoked by
Celery, not run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest

from beatd.ids import fire_id
from beatd.model import Every, Schedule
from beatd.publish.amqp import AmqpPublisher
from beatd.publish.base import Status
from beatd.publish.messages import build_message

pytestmark = pytest.mark.rabbitmq

TESTS = Path(__file__).resolve().parent
BROKER = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def worker_queue(amqp_server: str) -> Iterator[str]:
    name = f"beatd-e2e-{uuid.uuid4().hex[:12]}"
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(amqp_server))
    try:
        channel = conn.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)  # Celery declares an exchange named after the queue
    finally:
        conn.close()


def _start_worker(queue: str, out: Path, log: Path, python: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(TESTS)  # celery_app.py; the worker needs nothing of beatd
    env["BEATD_E2E_OUT"] = str(out)
    env["BEATD_E2E_BROKER"] = BROKER
    command = [
        python, "-m", "celery", "-A", "celery_app", "worker", "--pool=solo", "-Q", queue,
        "--without-heartbeat", "--without-gossip", "--without-mingle",
        "--loglevel=INFO", f"--hostname={queue}@%h",
    ]  # fmt: skip
    with log.open("wb") as sink:
        return subprocess.Popen(command, cwd=TESTS, env=env, stdout=sink, stderr=subprocess.STDOUT)


def _stop_worker(worker: subprocess.Popen[bytes]) -> int:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            return worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
            raise
    return worker.returncode


def _wait_for_lines(
    path: Path, count: int, worker: subprocess.Popen[bytes], log: Path
) -> list[Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        if worker.poll() is not None:
            pytest.fail(f"the worker exited ({worker.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"the worker ran {len(lines)} of {count} tasks in time:\n{log.read_text()[-3000:]}")


def test_a_celery_worker_runs_beatd_messages_and_drops_expired_ones(
    worker_queue: str, celery_python: str, tmp_path: Path
) -> None:
    out, log = tmp_path / "ran.jsonl", tmp_path / "worker.log"
    now = datetime.now(UTC).replace(microsecond=0)
    common: dict[str, Any] = {
        "spec": Every(timedelta(minutes=1)),
        "task": "beatd_e2e.record",
        "queue": worker_queue,
    }
    first = Schedule(
        name="e2e-first",
        args=(1, "two", [3, {"four": 4}]),
        kwargs={"nested": {"list": [1, None, True], "text": "Zürich"}, "day": date(2026, 5, 1)},
        expires=timedelta(hours=1),
        **common,
    )
    stale = Schedule(name="e2e-stale", args=("never",), expires=timedelta(seconds=60), **common)
    last = Schedule(name="e2e-last", kwargs={"n": 3}, **common)
    stale_at = now - timedelta(hours=1)
    messages = [
        build_message(first, now, now),
        build_message(stale, stale_at, stale_at),
        build_message(last, now, now),
    ]
    publisher = AmqpPublisher(BROKER)
    try:
        assert [r.status for r in publisher.publish(messages[:1], now)] == [Status.CONFIRMED]
        # Published "at" its own instant, its TTL still runs; Celery sees expires in the past.
        assert [r.status for r in publisher.publish(messages[1:2], stale_at)] == [Status.CONFIRMED]
        assert [r.status for r in publisher.publish(messages[2:], now)] == [Status.CONFIRMED]
    finally:
        publisher.close()

    worker = _start_worker(worker_queue, out, log, celery_python)
    try:
        # In order on one queue: had the stale one run, it would be second here.
        ran = _wait_for_lines(out, 2, worker, log)
    finally:
        code = _stop_worker(worker)

    assert ran == [
        {
            "id": fire_id("e2e-first", now),
            "args": [1, "two", [3, {"four": 4}]],
            "kwargs": {
                "nested": {"list": [1, None, True], "text": "Zürich"},
                "day": "2026-05-01",  # a real date in the task, str() by the recorder
            },
            "scheduled_for": now.isoformat().replace("+00:00", "Z"),
        },
        {
            "id": fire_id("e2e-last", now),
            "args": [],
            "kwargs": {"n": 3},
            "scheduled_for": now.isoformat().replace("+00:00", "Z"),
        },
    ]
    text = log.read_text()
    stale_id = fire_id("e2e-stale", stale_at)
    assert f"Discarding revoked task: beatd_e2e.record[{stale_id}]" in text, text[-3000:]
    assert code == 0, text[-3000:]
