"""The tests run on the library versions users get from a plain `pip install .`.

An extra of the test environment that pins what beatd depends on changes what
the tests exercise (celery==5.7.0 pinned python-dateutil to 2.9.0.post0 while
a plain install resolves 4.0.0). pip resolves a plain install here, as if
nothing were installed, and each package of it must be installed at the
version it chose.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def canonicalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def test_the_tests_run_on_what_a_plain_install_resolves(tmp_path: Path) -> None:
    report = tmp_path / "plain.json"
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    done = subprocess.run(
        [*argv, "--report", str(report), str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plain = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {
        name: f"{installed.get(name, 'missing')} here, {version} from `pip install .`"
        for name, version in plain.items()
        if installed.get(name) != version
    }
    assert not differ, f"{differ}: an extra changes it, or this venv is older than the index"
