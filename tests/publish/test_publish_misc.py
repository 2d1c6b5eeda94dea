"""RetryPolicy, Backoff, open_publisher and the stdout line format."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from publish_support import NOW, make_schedule

from beatd.errors import BrokerError, ConfigError
from beatd.model import Format
from beatd.publish import open_publisher
from beatd.publish.amqp import AmqpPublisher
from beatd.publish.base import Status
from beatd.publish.messages import build_message
from beatd.publish.retry import Backoff, RetryPolicy
from beatd.publish.stdout import StdoutPublisher


@pytest.mark.parametrize(
    ("policy", "failures", "delay"),
    [
        (RetryPolicy(), 0, 0.0),
        (RetryPolicy(), 1, 0.5),
        (RetryPolicy(), 2, 1.0),
        (RetryPolicy(), 5, 5.0),
        (RetryPolicy(initial=1, max=10, multiplier=3), 3, 9.0),
        (RetryPolicy(initial=1, max=10, multiplier=3), 4, 10.0),
        (RetryPolicy(initial=2, max=2, multiplier=1), 50, 2.0),
        (RetryPolicy(), 10_000, 5.0),
    ],
    ids=["none", "first", "doubles", "capped", "x3", "x3-capped", "constant", "huge"],
)
def test_retry_delays(policy: RetryPolicy, failures: int, delay: float) -> None:
    assert policy.delay(failures) == delay


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1}, {"initial": 5, "max": 1}, {"multiplier": 0.5}],
    ids=["negative", "max-below-initial", "shrinking"],
)
def test_invalid_retry_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(**kwargs)


def test_backoff_gate() -> None:
    clock = [0.0]
    backoff = Backoff(RetryPolicy(initial=1, max=4, multiplier=2), lambda: clock[0])
    assert backoff.remaining() == 0
    backoff.failed("refused")
    assert (backoff.remaining(), backoff.failures, backoff.last_error) == (1, 1, "refused")
    clock[0] = 1.0
    assert backoff.remaining() == 0
    backoff.failed("refused")
    backoff.failed("refused")
    assert backoff.remaining() == 4
    backoff.succeeded()
    assert (backoff.remaining(), backoff.failures, backoff.last_error) == (0, 0, None)


def test_open_publisher_by_scheme() -> None:
    assert isinstance(open_publisher("stdout://"), StdoutPublisher)
    amqp = open_publisher("amqp://guest:guest@127.0.0.1:5672/%2F")  # lazy: no connection yet
    assert isinstance(amqp, AmqpPublisher)
    amqp.close()
    assert isinstance(open_publisher("AMQPS://guest:guest@127.0.0.1/"), AmqpPublisher)


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("redis://:hunter2@host/0", "redis"), ("kafka://u:hunter2@x", "kafka"), ("path/x", "")],
    ids=["redis", "kafka", "bare"],
)
def test_open_publisher_refuses_other_schemes(url: str, scheme: str) -> None:
    with pytest.raises(ConfigError, match=f"unsupported broker URL scheme '{scheme}'") as error:
        open_publisher(url)
    assert "hunter2" not in str(error.value)


def test_unparseable_amqp_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"invalid broker URL 'amqp://u:\*\*\*@h:notaport/'"):
        AmqpPublisher("amqp://u:pw@h:notaport/")


def test_stdout_line_format() -> None:
    stream = io.StringIO()
    schedule = make_schedule(
        "ping", format=Format.JSON, priority=2, expires=timedelta(minutes=1), queue="pings"
    )
    message = build_message(schedule, NOW, NOW)
    StdoutPublisher(stream).publish([message], NOW)
    record = json.loads(stream.getvalue())
    assert record == {
        "fire_id": message.fire_id,
        "schedule": "ping",
        "scheduled_for": "2026-11-27T12:00:00Z",
        "exchange": "",
        "routing_key": "pings",
        "headers": {"beatd-scheduled-for": "2026-11-27T12:00:00Z"},
        "body": json.loads(message.body),
        "priority": 2,
        "expires_at": "2026-11-27T12:01:00Z",
    }


def test_stdout_defaults_to_the_current_sys_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    publisher = StdoutPublisher()
    publisher.publish([build_message(make_schedule(), NOW, NOW)], NOW)
    assert json.loads(capsys.readouterr().out)["schedule"] == "job"


def test_stdout_closed_stream_is_a_broker_error() -> None:
    stream = io.StringIO()
    publisher = StdoutPublisher(stream)
    stream.close()
    assert publisher.check() == "stdout is closed"
    with pytest.raises(BrokerError, match="stdout publisher cannot write"):
        publisher.publish([build_message(make_schedule(), NOW, NOW)], NOW)
    assert publisher.publish([], NOW) == []


def test_stdout_non_json_body_is_printed_as_text() -> None:
    import dataclasses

    stream = io.StringIO()
    message = dataclasses.replace(build_message(make_schedule(), NOW, NOW), body=b"plain")
    assert StdoutPublisher(stream).publish([message], NOW)[0].status is Status.CONFIRMED
    assert json.loads(stream.getvalue())["body"] == "plain"
