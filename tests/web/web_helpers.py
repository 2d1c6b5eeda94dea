"""Helpers of the console tests (a uniquely named module: several conftest.py exist).

`open_console` is the app on a fresh database whose config declares one file
schedule (loaded into the database as a daemon would) and whose API holds
whatever a test adds. `Client` reads the CSRF token from the last page, as a
browser submitting that page's form would send it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from beatd import timing
from beatd.api import Beat
from beatd.store.sql import migrate
from beatd.web.app import create_app

TOKEN = "s3cret-token-for-the-tests-0123456789"
FILE_SCHEDULE = "nightly-report"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Client:
    """A browser-like client: GETs a page, then POSTs its forms with the page's CSRF token."""

    flask: FlaskClient
    csrf: str = ""

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        response = self.flask.get(path, **kwargs)
        found = CSRF.search(response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> TestResponse:
        if not self.csrf:
            self.get("/add")
        return self.flask.post(path, data={"csrf": self.csrf, **data}, **kwargs)

    def text(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_data(as_text=True)


@dataclass
class Console:
    beat: Beat
    app: Flask

    def client(self) -> Client:
        return Client(self.app.test_client())


def write_config(tmp_path: Path, db_url: str) -> Path:
    path = tmp_path / "beatd.toml"
    path.write_text(
        f'[beatd]\ndatabase = "{db_url}"\nbroker = "stdout://"\n\n'
        f'[schedules.{FILE_SCHEDULE}]\ncron = "30 2 * * *"\ntimezone = "Europe/Berlin"\n'
        'task = "reports.nightly"\n'
    )
    return path


def open_console(tmp_path: Path, db_url: str, token: str | None = None) -> Console:
    migrate.upgrade(db_url)
    beat = Beat.from_config(write_config(tmp_path, db_url))
    now = beat.clock.now()
    beat.store.load_file(beat.settings.schedules, lambda s: timing.next_after(s, now))
    app = create_app(beat, token)
    app.config["TESTING"] = True
    return Console(beat, app)
