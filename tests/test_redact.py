"""redact(): the one function every URL and message passes through before a user sees it."""

from __future__ import annotations

import logging
import re

import pytest

from beatd.errors import ConfigError
from beatd.logs import JsonFormatter, TextFormatter
from beatd.publish import open_publisher
from beatd.redact import redact
from beatd.store.sql.engine import make_engine

URLS = [
    ("amqp", "amqp://guest:guest@host:5672/%2F", "amqp://guest:***@host:5672/%2F"),
    ("encoded", "amqps://u:p%40ss@h/vh?heartbeat=30", "amqps://u:***@h/vh?heartbeat=30"),
    ("hash-raw", "amqp://guest:Zq9x#y@host/", "amqp://guest:***@host/"),
    ("hash-encoded", "amqp://guest:Zq9x%23y@host/", "amqp://guest:***@host/"),
    ("at-raw", "postgresql://u:p@ss@db/x", "postgresql://u:***@db/x"),
    ("every-separator", "postgresql://u:a#b@c:d/e?f@h:5/x", "postgresql://u:***@h:5/x"),
    ("no-password", "amqp://guest@host/", "amqp://guest@host/"),
    ("at-in-user", "postgresql://me@corp:pw@db/x", "postgresql://me@corp:***@db/x"),
    ("no-user", "amqp://host/", "amqp://host/"),
    ("empty-user", "redis://:x@y/0", "redis://:***@y/0"),
    ("at-in-query", "amqp://host/?email=a@b", "amqp://host/?email=a@b"),
    ("at-in-path", "sqlite:////tmp/a:b@c/x.db", "sqlite:////tmp/a:b@c/x.db"),
    (
        "query-password",
        "postgresql://db/x?password=hunter2&a=1",
        "postgresql://db/x?password=***&a=1",
    ),
    (
        "query-sslpassword",
        "postgresql://u@db/x?sslmode=verify-full&sslpassword=k3y#frag",
        "postgresql://u@db/x?sslmode=verify-full&sslpassword=***",
    ),
    (
        "query-raw-separators",
        "postgresql://u@db:5432/x?password=a#b@c:d/e?f&a=1",
        "postgresql://u@db:5432/x?password=***&a=1",
    ),
    (
        "query-and-user-info",
        "postgresql://u:pw@db/x?sslpassword=a@b&password=c?d#e",
        "postgresql://u:***@db/x?sslpassword=***&password=***",
    ),
    (
        "ssl-options",
        "amqps://u:p@h/?ssl_options=%7B%27password%27%3A%27KeyPw99%27%7D&heartbeat=5",
        "amqps://u:***@h/?ssl_options=***&heartbeat=5",
    ),
    ("not-a-url", "garbage", "garbage"),
    ("stdout", "stdout://", "stdout://"),
]


@pytest.mark.parametrize(("url", "shown"), [c[1:] for c in URLS], ids=[c[0] for c in URLS])
def test_a_url_keeps_everything_but_its_secrets(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert redact(shown) == shown  # redacting twice changes nothing


def test_urls_written_in_a_message_are_masked() -> None:
    text = "see amqp://a:b@c/ and redis://:x@y/0 (or 'amqp://u:p#q@h/x')."
    assert redact(text) == "see amqp://a:***@c/ and redis://:***@y/0 (or 'amqp://u:***@h/x')."


SECRET = "Zq9x#Yk3@Wm7:Pv2/Qr5?Ts8"
PIECES = ("Zq9x", "Yk3", "Wm7", "Pv2", "Qr5", "Ts8")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://beatd:{SECRET}@db/x",
        "postgresql://beatd:Zq9x%23Yk3%40Wm7%3APv2%2FQr5%3FTs8@db/x",
        "postgresql://beatd@db/x?password=Zq9x%23Yk3%40Wm7%3APv2%2FQr5%3FTs8",
        "amqps://u@h/?ssl_options=%7B%27password%27%3A%27Zq9x%23Yk3%40Wm7%3APv2%2FQr5%3FTs8%27%7D",
    ],
    ids=["raw", "encoded", "query", "ssl-options"],
)
def test_a_message_loses_every_form_of_the_urls_password(url: str) -> None:
    """Drivers quote a password decoded, or cut at an `@` (the rest taken for a host)."""
    message = f"connect to Wm7:Pv2/Qr5?Ts8@db failed; password {SECRET!r} rejected"
    shown = redact(message, url)
    assert not any(piece in shown for piece in PIECES), shown
    assert "connect to" in shown and "failed" in shown
    assert not any(piece in redact(url) for piece in PIECES)


def test_short_fragments_are_not_hunted_in_words() -> None:
    assert redact("the host is ok", "amqp://u:ok@h/") == "the host is ok"


@pytest.mark.parametrize("formatter", [JsonFormatter, TextFormatter])
def test_every_log_line_is_redacted(formatter: type[JsonFormatter | TextFormatter]) -> None:
    url = f"postgresql://beatd:{SECRET}@db/x"
    record = logging.LogRecord("beatd.x", logging.ERROR, __file__, 1, "lost %s", (SECRET,), None)
    record.database = url
    line = formatter([url]).format(record)
    assert not any(piece in line for piece in PIECES), line
    assert "postgresql://beatd:***@db/x" in line


@pytest.mark.parametrize(
    "url",
    [
        "amqps://u:p@h/?ssl_options=%7B%27password%27%3A%27KeyPw99%27",  # unbalanced literal
        "amqps://u:p@h/?ssl_options=%7B%27certfile%27%3A%27%2Fnone%27%2C%27password%27%3A%27KeyPw99%27%7D",
    ],
    ids=["syntax", "missing-certfile"],
)
def test_bad_ssl_options_are_one_line_without_the_key_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_publisher(url)
    assert "KeyPw99" not in str(caught.value)
    assert str(caught.value).startswith("invalid broker URL 'amqps://u:***@h/?ssl_options=***'")


def test_database_driver_errors_are_redacted() -> None:
    with pytest.raises(ConfigError) as caught:
        make_engine("nosuchdb://u:Pw%23Secret@h/db?password=QuerySecret")
    text = str(caught.value)
    assert not re.search("Secret", text), text
