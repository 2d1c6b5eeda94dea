"""Starting and stopping the processes under test, and reading their figures from /proc.

CPU is utime + stime from /proc/<pid>/stat (psutil is not a dependency);
peak RSS is VmHWM from /proc/<pid>/status. Every process is started in its
own session and stopped by its own id: SIGTERM, then SIGKILL after a bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[2]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process so far; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds per live pid."""
    found = {}
    for pid in pids:
        value = cpu_seconds(pid)
        if value is not None:
            found[pid] = value
    return found


def cpu_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU used between two samples; a pid first seen in `after` counts from zero."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float | None:
    """VmHWM (peak resident set; VmRSS: current) in MiB; None if the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def python() -> str:
    return sys.executable


def start(
    argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a process in its own session, output to `log`, cwd at the repo root."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=full_env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _die_with_parent() -> None:
    """In the child: SIGKILL when the harness dies, so nothing outlives a killed run."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM the process (its session's group), SIGKILL it after `timeout`."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, as a crash would; reaps the process."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(5)


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)  # the group we created with start_new_session
    except ProcessLookupError:
        pass


def sleep_until(deadline: float) -> None:
    """Sleep until time.time() reaches `deadline` (bounded by the deadline itself)."""
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, 0.5))


def tail(log: Path, chars: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
