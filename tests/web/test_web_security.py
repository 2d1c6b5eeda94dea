"""The console's security points (SPEC §9): CSRF, authentication, escaping, headers."""

from __future__ import annotations

import html
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import TOKEN, Client, Console, open_console, write_config

from beatd.api import Beat
from beatd.cli.main import main
from beatd.cli.web_cmds import TOKEN_ENV, web_token
from beatd.errors import ConfigError
from beatd.web.app import create_app
from beatd.web.guard import HEADERS


@pytest.fixture
def guarded(tmp_path: Path, sqlite_url: str) -> Iterator[Console]:
    """The console with BEATD_WEB_TOKEN set."""
    opened = open_console(tmp_path, sqlite_url, token=TOKEN)
    opened.beat.add("ping", every="1m", task="app.ping")
    yield opened
    opened.beat.close()


def test_a_change_without_the_session_csrf_token_is_refused(
    console: Console, client: Client
) -> None:
    console.beat.add("ping", every="1m", task="app.ping")
    client.get("/schedule?name=ping")
    for form in ({"name": "ping"}, {"name": "ping", "csrf": "forged"}):
        refused = client.flask.post("/schedule/pause", data=form)
        assert refused.status_code == 403
        assert "CSRF check failed" in refused.get_data(as_text=True)
    # a token from another session is no better
    other = console.client()
    other.get("/add")
    stolen = client.flask.post("/schedule/pause", data={"name": "ping", "csrf": other.csrf})
    assert stolen.status_code == 403
    assert console.beat.get("ping").state == "active"
    assert client.post("/schedule/pause", {"name": "ping"}).status_code == 303  # the real form


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_any_address_but_loopback_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match=f"refusing to serve on {host} without authentication"):
        web_token(host, {})
    assert web_token(host, {TOKEN_ENV: TOKEN}) == TOKEN
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert web_token(loopback, {}) is None


def test_beatd_web_refuses_to_start_off_loopback_without_a_token(
    tmp_path: Path, sqlite_url: str
) -> None:
    config = write_config(tmp_path, sqlite_url)
    env = {"PATH": "/usr/bin:/bin"}
    beatd = [sys.executable, "-m", "beatd.cli.main", "--config", str(config), "web"]
    done = subprocess.run(
        [*beatd, "--bind", "0.0.0.0:0"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2
    assert done.stderr == (
        "beatd: web: refusing to serve on 0.0.0.0 without authentication: "
        f"set {TOKEN_ENV} (or bind to 127.0.0.1)\n"
    )
    short = subprocess.run(
        beatd, capture_output=True, text=True, timeout=60, env={**env, TOKEN_ENV: "short"}
    )
    assert short.returncode == 2 and "use at least 16 characters" in short.stderr


def test_with_a_token_every_page_needs_it(guarded: Console) -> None:
    client = guarded.client().flask
    for path in ("/schedules", "/schedule?name=ping", "/cluster", "/add"):
        away = client.get(path)
        assert away.status_code == 302
        assert away.headers["Location"].startswith("/login?next=")
    assert client.post("/schedule/pause", data={"name": "ping"}).status_code == 401
    wrong = client.get("/schedules", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == 'Bearer realm="beatd"'
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/schedules", headers=right).status_code == 200
    # a bearer request is not one a browser sends by itself: no CSRF token needed
    assert client.post("/schedule/pause", data={"name": "ping"}, headers=right).status_code == 303
    assert guarded.beat.get("ping").state == "paused"


def test_login_sets_an_httponly_samesite_cookie_and_a_wrong_token_is_refused(
    guarded: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = guarded.client()
    login = client.text("/login?next=/schedule%3Fname%3Dping")
    wrong = client.post("/login", {"token": TOKEN[:-1], "next": "/schedule?name=ping"})
    assert wrong.status_code == 401
    assert "wrong token" in wrong.get_data(as_text=True)
    assert "Set-Cookie" not in wrong.headers or "auth" not in wrong.headers["Set-Cookie"]
    assert client.get("/schedules").status_code == 302

    client.get("/login")
    done = client.post("/login", {"token": TOKEN, "next": "/schedule?name=ping"})
    assert done.status_code == 303 and done.headers["Location"] == "/schedule?name=ping"
    cookie = done.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.text("/schedules")
    assert "Log out" in page
    for shown in (login, page, cookie, caplog.text, wrong.get_data(as_text=True)):
        assert TOKEN not in shown

    client.post("/logout", {})
    assert client.get("/schedules").status_code == 302


def test_login_goes_back_only_to_this_console(guarded: Console) -> None:
    client = guarded.client()
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        client.get("/login")
        done = client.post("/login", {"token": TOKEN, "next": target})
        assert done.headers["Location"] == "/schedules"


def test_without_a_token_only_loopback_host_names_are_answered(client: Client) -> None:
    assert client.flask.get("/schedules", headers={"Host": "localhost:9465"}).status_code == 200
    assert client.flask.get("/schedules", headers={"Host": "127.0.0.1:9465"}).status_code == 200
    rebound = client.flask.get("/schedules", headers={"Host": "evil.example:9465"})
    assert rebound.status_code == 400  # a DNS-rebinding page cannot read the console


def test_user_data_is_escaped_everywhere(console: Console, client: Client) -> None:
    evil = "<script>alert(1)</script>"
    console.beat.add(evil, every="1m", task=f"app.{evil}", kwargs={"x": evil}, queue=evil)
    console.beat.pause(evil, note=evil)
    pages = [
        client.text("/schedules"),
        client.text("/schedules?q=%3Cscript"),
        client.text("/schedule?name=%3Cscript%3Ealert(1)%3C/script%3E"),
        client.text("/edit?name=%3Cscript%3Ealert(1)%3C/script%3E"),
    ]
    for page in pages:
        assert "<script" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    bad = client.post(
        "/add", {"name": evil, "kind": "cron", "spec": evil, "task": "x", "action": "save"}
    )
    assert "<script" not in bad.get_data(as_text=True)


def test_every_response_carries_the_security_headers(console: Console, client: Client) -> None:
    responses = [
        client.get("/schedules"),
        client.get("/schedule?name=nope"),  # an error page
        client.get("/"),  # a redirect
        client.get("/static/style.css"),
        client.flask.post("/schedule/pause", data={}),  # refused
    ]
    for response in responses:
        for header, value in HEADERS.items():
            assert response.headers[header] == value
        response.close()
    csp = HEADERS["Content-Security-Policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp  # no script runs at all
    assert "frame-ancestors 'none'" in csp


def test_without_the_extra_beatd_web_says_what_to_install(
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for module in ("beatd.web.server", "beatd.web.app", "waitress", "waitress.server"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "waitress", None)  # as if `pip install beatd` alone
    config = write_config(tmp_path, sqlite_url)
    assert main(["--config", str(config), "web"]) == 1
    assert capsys.readouterr().err == (
        "beatd: web: waitress is not installed; the console needs: pip install 'beatd[web]'\n"
    )


def test_no_password_of_the_database_or_broker_is_shown(tmp_path: Path) -> None:
    secret = "Zq9x#y@:/?s3cret"
    quoted = "Zq9x%23y%40%3A%2F%3Fs3cret"
    config = tmp_path / "beatd.toml"
    config.write_text(
        "[beatd]\n"
        f'database = "postgresql+psycopg://beatd:{quoted}@127.0.0.1:1/beatd"\n'
        f'broker = "amqp://beatd:{quoted}@127.0.0.1:1/%2F"\n'
    )
    beat = Beat.from_config(config)
    try:
        client = Client(create_app(beat).test_client())
        cluster = client.text("/cluster")
        assert "error: " in cluster and "***" in cluster
        failed = client.get("/schedule?name=x")  # the database cannot be reached
        assert failed.status_code == 503
        for page in (cluster, failed.get_data(as_text=True)):
            for part in (secret, quoted, "Zq9x", "s3cret"):
                assert part not in html.unescape(page)
    finally:
        beat.close()
