"""`beatd web`: the console for operators (SPEC §9), in its own process."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from beatd.api import Beat
from beatd.cli.main import EXIT_OK, add_command
from beatd.config import load_settings
from beatd.errors import BeatdError, ConfigError
from beatd.http import parse_bind
from beatd.logs import FORMATS, setup

TOKEN_ENV = "BEATD_WEB_TOKEN"
MIN_TOKEN = 16  # characters: a shorter token could be guessed
DEFAULT_BIND = "127.0.0.1:9465"
EXTRA = ("flask", "waitress", "jinja2", "werkzeug", "itsdangerous", "markupsafe")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    web = add_command(
        sub,
        "web",
        "serve the web console: schedules, history, actions, cluster "
        f"(needs pip install 'beatd[web]'; any address but loopback needs ${TOKEN_ENV})",
        _web,
    )
    web.add_argument(
        "--bind",
        metavar="HOST:PORT",
        default=DEFAULT_BIND,
        help=f"where to listen (default {DEFAULT_BIND}; port 0 picks a free one)",
    )
    web.add_argument(
        "--log-format", choices=FORMATS, default=None, help="log lines as json or text"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def web_token(host: str, environ: Mapping[str, str]) -> str | None:
    """The token pages need, or None on loopback without one; ConfigError when unsafe."""
    token = environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN:
        raise ConfigError(
            f"{TOKEN_ENV}: use at least {MIN_TOKEN} characters, e.g. the output of "
            "python3 -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"web: refusing to serve on {host} without authentication: set {TOKEN_ENV} "
            "(or bind to 127.0.0.1)"
        )
    return token


def _web(args: argparse.Namespace) -> int:
    host, port = parse_bind(args.bind)
    token = web_token(host, os.environ)
    settings = load_settings(args.config)
    try:
        from beatd.web.server import serve
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in EXTRA:
            raise
        raise BeatdError(
            f"web: {missing} is not installed; the console needs: pip install 'beatd[web]'"
        ) from None
    setup(args.log_format or settings.log_format, urls=(settings.database, settings.broker))
    with Beat(settings=settings) as beat:
        serve(beat, host, port, token)
    return EXIT_OK
