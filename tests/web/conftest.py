"""Fixtures of the console tests: the app over SQLite and PostgreSQL, and a client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import Client, Console, open_console


@pytest.fixture
def console(tmp_path: Path, db_url: str) -> Iterator[Console]:
    opened = open_console(tmp_path, db_url)
    yield opened
    opened.beat.close()


@pytest.fixture
def client(console: Console) -> Client:
    return console.client()
