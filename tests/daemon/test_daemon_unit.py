"""systemd/beatd.service: the promised options, and `systemd-analyze verify` when present."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "beatd.service"


def options() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30s"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("StateDirectory", "beatd"),
        ("WorkingDirectory", "/var/lib/beatd"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("User", "beatd"),
    ],
)
def test_unit_declares(key: str, value: str) -> None:
    assert value in options()[key]


def test_unit_runs_the_daemon_in_the_foreground() -> None:
    (start,) = options()["ExecStart"]
    assert start.split()[1] == "run"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "beatd.service"
    unit.write_text(
        UNIT.read_text().replace("/usr/local/bin/beatd", f"{sys.executable} -m beatd.cli.main")
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in result.stderr.splitlines() if "beatd.service" in line]
    assert result.returncode == 0 and not problems, result.stderr
