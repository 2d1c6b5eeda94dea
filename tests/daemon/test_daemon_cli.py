"""`beatd status` and `beatd run` at the edges: shapes, exit codes, no passwords."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from beatd.cli.main import main
from beatd.ids import fire_id
from beatd.model import Decision, Every, Outcome, Schedule
from beatd.publish.messages import build_message
from beatd.store import open_store
from beatd.store.sql import migrate


def test_status_json_when_nothing_is_reachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "beatd.toml"
    config.write_text(
        "[beatd]\n"
        'database = "postgresql+psycopg://beatd:s3cretdb@127.0.0.1:1/beatd"\n'
        'broker = "amqp://guest:s3cretmq@127.0.0.1:1/%2F"\n'
    )
    assert main(["--config", str(config), "status", "--json"]) == 1
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert {"leader", "epoch", "lease_expires", "backlog", "database", "broker"} <= set(report)
    assert report["leader"] is None and report["epoch"] is None and report["backlog"] is None
    assert report["database"].startswith("error: ")
    assert report["broker"].startswith("error: ")
    assert "s3cret" not in out.out + out.err


def test_status_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "beatd.toml"
    config.write_text(f'[beatd]\ndatabase = "sqlite:///{tmp_path}/none.db"\n')
    assert main(["--config", str(config), "status"]) == 2  # no tables: as every command
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("leader:") and lines[0].endswith("-")
    assert any(line.startswith("broker:") and line.endswith("ok") for line in lines)
    assert any(line.startswith("database:") and "beatd db upgrade" in line for line in lines)


def test_run_with_a_broken_config_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "beatd.toml"
    config.write_text("[schedules.x]\nevery = \n")
    assert main(["--config", str(config), "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "beatd.toml:2" in err[0]


def test_run_rejects_an_unknown_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--log-format", "xml"]) == 2
    assert "log-format" in capsys.readouterr().err


def test_the_readme_command_runs_the_example_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    """`beatd --config schedules.example.toml run`: creates the tables, publishes, stops on TERM."""
    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "schedules.example.toml", tmp_path)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = {**os.environ, "PYTHONPATH": str(root)}
    for key in ("BEATD_DATABASE", "BEATD_BROKER", "BEATD_CONFIG", "NOTIFY_SOCKET"):
        env.pop(key, None)
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beatd.cli.main", "--config", "schedules.example.toml", "run"],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while not out.read_text().strip():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    message = json.loads(out.read_text().splitlines()[0])
    assert message["schedule"] in {"heartbeat", "ten-second-probe", "queue-depth"}
    assert (tmp_path / "beatd.db").exists()
    assert "created beatd's tables" in err.read_text()


def test_run_opens_the_store_without_importing_alembic(tmp_path: Path) -> None:
    """Alembic (with Mako and Pygments) is a third of the imports: only `db upgrade` needs it."""
    from beatd.store.sql import migrate

    url = f"sqlite:///{tmp_path}/beatd.db"
    migrate.upgrade(url)
    code = (
        "import sys\n"
        "from beatd.cli.main import build_parser\n"
        "from beatd.store import open_or_create\n"
        "build_parser()\n"
        f"open_or_create({url!r}).close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_run_creates_the_tables_only_in_an_empty_database(tmp_path: Path) -> None:
    from beatd.errors import SchemaError
    from beatd.store import open_or_create

    url = f"sqlite:///{tmp_path}/beatd.db"
    open_or_create(url).close()  # no file yet: the tables are created
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM alembic_version"))  # beatd's tables, no revision
    engine.dispose()
    with pytest.raises(SchemaError, match="no revision; run: beatd db upgrade"):
        open_or_create(url)


def test_status_says_when_fires_are_not_recorded_or_published_and_the_file_is_not_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No leader at work: a due schedule nobody records, a fire nobody publishes."""
    url = f"sqlite:///{tmp_path}/beatd.db"
    config = tmp_path / "beatd.toml"
    config.write_text(
        f'[beatd]\ndatabase = "{url}"\n[schedules.nightly]\ncron = "0 3 * * *"\ntask = "t"\n'
    )
    migrate.upgrade(url)
    store = open_store(url)
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    api = Schedule("api", Every(timedelta(minutes=1)), "t")
    store.put(api, past, replace=False)
    message = build_message(api, past, past)
    store.record(
        None, [Decision("api", past, fire_id("api", past), Outcome.PENDING, None, message)], []
    )
    store.close()

    assert main(["--config", str(config), "status", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["database"] == "ok" and report["leader"] is None and report["backlog"] == 1
    when = past.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert re.fullmatch(
        rf"error: a schedule due at {when}, 30\d s ago \(no leader\)", report["recording"]
    )
    assert re.fullmatch(
        rf"error: a fire due at {when}, 30\d s ago \(no leader\)", report["publishing"]
    )
    assert report["file"].startswith(f"error: none of the schedules of {config} is in the database")
