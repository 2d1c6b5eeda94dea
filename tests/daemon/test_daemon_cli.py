"""`beatd status` and `beatd run` at the edges: shapes, exit codes, no passwords."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beatd.cli.main import main


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
    assert main(["--config", str(config), "status"]) == 1
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
