"""The CLI at its edges: config paths that are not files, read-only and misplaced SQLite
files, a database without tables. One line, the right exit code, never a hang."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from beatd.config import MAX_FILE_BYTES
from beatd.store.sql import migrate

REPO = Path(__file__).resolve().parent.parent
BEATD = [sys.executable, "-m", "beatd.cli.main"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEATD_", "NOTIFY_SOCKET"))}
    return {**env, "PYTHONPATH": str(REPO)}


def _limited() -> None:
    """A reader of /dev/zero runs out of address space, not the machine out of memory."""
    resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))


def _beatd(
    config: Path, *argv: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *BEATD, "--config", str(config), *argv],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=config.parent if config.parent.is_dir() else REPO,
        timeout=60,
        preexec_fn=_limited,
    )


# -- the config file ---------------------------------------------------------------------


@pytest.fixture(params=["fifo", "dev-zero", "directory", "huge"])
def not_a_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    kind = request.param
    path = tmp_path / "beatd.toml"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading waited for a writer forever
        yield path, "not a regular file (a FIFO)"
    elif kind == "dev-zero":
        yield Path("/dev/zero"), "not a regular file (a character device)"
    elif kind == "directory":
        path.mkdir()
        yield path, "not a regular file (a directory)"
    else:
        with path.open("wb") as handle:
            handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
        yield path, "larger than 64 MiB"


def test_a_config_that_is_not_a_regular_file_of_sane_size_is_refused(
    not_a_config: tuple[Path, str],
) -> None:
    path, why = not_a_config
    for argv in (["validate"], ["run"]):
        done = _beatd(path, *argv)
        assert (done.returncode, done.stderr) == (
            2,
            f"beatd: {path}: cannot read config file: {why}\n",
        )


# -- SQLite files ---------------------------------------------------------------------------

_NO_OVERRIDE = "-dac_override,-dac_read_search,-fowner"


def _without_root_powers() -> tuple[str, ...]:
    """A prefix that makes file modes bind this process (root ignores them otherwise)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be made to bind")
    return ("setpriv", "--bounding-set", _NO_OVERRIDE, "--inh-caps", _NO_OVERRIDE)


@pytest.mark.parametrize("writer", ["stopped", "running"])
def test_a_read_only_sqlite_file_serves_the_reading_commands(tmp_path: Path, writer: str) -> None:
    """An operator who may read the daemon's file but not write it (nor its directory)."""
    folder = tmp_path / "data"
    folder.mkdir()
    url = f"sqlite:///{folder}/beatd.db"
    migrate.upgrade(url)
    config = tmp_path / "beatd.toml"
    config.write_text(f'[beatd]\ndatabase = "{url}"\nbroker = "stdout://"\n')
    assert _beatd(config, "add", "x", "--every", "5m", "--task", "t").returncode == 0
    holder = None
    if writer == "running":  # its -wal and -shm exist, written by someone else
        import sqlite3

        holder = sqlite3.connect(folder / "beatd.db")
        holder.execute("UPDATE schedules SET name = name")  # a frame in the WAL
        holder.commit()
    files = [folder / name for name in os.listdir(folder)]
    try:
        for path in files:
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        folder.chmod(0o555)
        prefix = _without_root_powers()
        for argv in (["list"], ["history"], ["upcoming"], ["status"]):
            done = _beatd(config, *argv, prefix=prefix)
            assert (done.returncode, done.stderr) == (0, ""), argv
        assert "x " in _beatd(config, "list", prefix=prefix).stdout
        refused = _beatd(config, "add", "y", "--every", "5m", "--task", "t", prefix=prefix)
        assert refused.returncode == 1
        assert refused.stderr.endswith("attempt to write a readonly database\n")
    finally:
        folder.chmod(0o755)
        for path in files:
            path.chmod(0o644)
        if holder is not None:
            holder.close()


def test_a_sqlite_file_in_a_missing_directory_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such"
    config = tmp_path / "beatd.toml"
    config.write_text(f'[beatd]\ndatabase = "sqlite:///{folder}/beatd.db"\n')
    line = f"beatd: database sqlite:///{folder}/beatd.db: directory {folder} does not exist\n"
    for argv in (["history"], ["db", "upgrade"], ["add", "x", "--every", "1m", "--task", "t"]):
        done = _beatd(config, *argv)
        assert (done.returncode, done.stderr) == (2, line), argv
    run = _beatd(config, "run")  # it retried forever: "unable to open database file"
    assert (run.returncode, run.stderr.splitlines()[-1]) == (2, line.rstrip())
    status = _beatd(config, "status")
    assert (status.returncode, status.stderr) == (2, line)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_history_and_status_on_a_database_without_tables_agree(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path}/beatd.db"
        if database == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    config = tmp_path / "beatd.toml"
    config.write_text(f'[beatd]\ndatabase = "{url}"\nbroker = "stdout://"\n')
    history, status = _beatd(config, "history"), _beatd(config, "status")
    line = "beatd: database has no beatd tables; run: beatd db upgrade\n"
    assert (history.returncode, history.stderr) == (2, line)
    assert (status.returncode, status.stderr) == (2, line)  # was 1, and said it on stdout only
    assert "database:      error: database has no beatd tables" in status.stdout
