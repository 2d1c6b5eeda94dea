"""Celery in a venv of its own, for the processes that run Celery in tests and benchmarks.

Celery 5.7.0 pins python-dateutil==2.9.0.post0: installed beside beatd it
would downgrade the dateutil a plain `pip install .` resolves (4.0), and
beatd's tests would run on a library its users do not get. So the Celery
worker of tests/test_celery_e2e.py (and the benchmark's Celery beat) run on
the interpreter of `.venv-celery` at the repository root, made on first use
with the pip beatd's own venv was made with, and reused while its pin stays.

The tests of `beatd import celery` and `beatd import django-celery-beat` run
the import, Celery and Django in `.venv-import` (beatd with Celery,
django-celery-beat and ephem), as a user runs the import inside the
environment of their app.

    .venv/bin/python tests/celery_env.py     # make it if needed; prints its python
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

PIN = "celery==5.7.0"
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-celery"


class CeleryEnvError(RuntimeError):
    """The venv could not be made; the message carries pip's last lines."""


def celery_python() -> Path:
    """The python of a venv holding only `PIN`; made (or remade for a new pin) under a lock."""
    return venv_python(VENV, [PIN])


IMPORT_VENV = ROOT / ".venv-import"


def import_python() -> Path:
    """The python of a venv holding beatd (editable) beside the systems `beatd import` reads,
    as a user runs it inside their Celery or django-celery-beat environment (where Celery's
    pin holds python-dateutil at 2.9). Remade when the pins or pyproject.toml change."""
    pyproject = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    requirements = [PIN, "django-celery-beat>=2.7", "ephem>=4.1", "-e", str(ROOT)]
    return venv_python(IMPORT_VENV, requirements, stamp=pyproject)


def venv_python(venv: Path, requirements: list[str], stamp: str = "") -> Path:
    """The python of `venv` holding `requirements`, made (or remade when they change) under
    a lock: two sessions must not build it at once."""
    python = venv / "bin" / "python"
    marker = venv / "beatd-pin.txt"  # written last: a venv without it is half made
    wanted = " ".join([*requirements, stamp]).strip()
    with venv.with_name(venv.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        for argv in (
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", *requirements],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise CeleryEnvError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        marker.write_text(wanted)
    return python


if __name__ == "__main__":
    print(celery_python())
