"""Celery in a venv of its own, for the processes that run Celery in tests and benchmarks.

Celery 5.7.0 pins python-dateutil==2.9.0.post0: installed beside beatd it
would downgrade the dateutil a plain `pip install .` resolves (4.0), and
beatd's tests would run on a library its users do not get. So the Celery
worker of tests/test_celery_e2e.py (and the benchmark's Celery beat) run on
the interpreter of `.venv-celery` at the repository root, made on first use
with the pip beatd's own venv was made with, and reused while its pin stays.

    .venv/bin/python tests/celery_env.py     # make it if needed; prints its python
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

PIN = "celery==5.7.0"
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-celery"
MARKER = VENV / "beatd-pin.txt"  # written last: a venv without it is half made


class CeleryEnvError(RuntimeError):
    """The venv could not be made; the message carries pip's last lines."""


def celery_python() -> Path:
    """The python of a venv holding only `PIN`; made (or remade for a new pin) under a lock."""
    python = VENV / "bin" / "python"
    with (ROOT / ".venv-celery.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions must not build it at once
        if MARKER.exists() and MARKER.read_text() == PIN and python.exists():
            return python
        shutil.rmtree(VENV, ignore_errors=True)
        for argv in (
            [sys.executable, "-m", "venv", str(VENV)],
            [str(python), "-m", "pip", "install", "--quiet", PIN],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise CeleryEnvError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        MARKER.write_text(PIN)
    return python


if __name__ == "__main__":
    print(celery_python())
