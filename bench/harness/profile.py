"""Optional sampling profile of the process under test (py-spy, from the `bench` extra).

`--profile` attaches `py-spy record --nonblocking` to the scheduler process
for the steady window and keeps the collapsed stacks beside the results;
`summary` names where the samples went: the functions most often on the
stack (inclusive) and most often at its top (self).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_PLUMBING = ("(threading.py)", "(runpy.py)", "(<frozen runpy>)")  # on every stack: says nothing


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Record `pid` for `seconds` into `out` (collapsed stacks); None without py-spy."""
    tool = py_spy()
    if tool is None:
        return None
    argv = [tool, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", "100", "--nonblocking", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    if proc is None:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Recording:
    """py-spy on each of `pids` (one per instance), joined into `out` by `finish`.

    py-spy attaches to one process; collapsed stacks of several add up line
    by line, so the joined file reads as the whole system's samples.
    """

    def __init__(self, pids: Sequence[int], seconds: float, out: Path) -> None:
        self.out = out
        self.parts = [out] if len(pids) == 1 else [out.with_suffix(f".{pid}.txt") for pid in pids]
        self.procs = [start(pid, seconds, part) for pid, part in zip(pids, self.parts, strict=True)]

    def finish(self) -> None:
        for proc in self.procs:
            finish(proc)
        if self.parts != [self.out]:
            joined = (p.read_text() for p in self.parts if p.exists())
            self.out.write_text("".join(joined))


def summary(path: Path, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """Shares of samples: {"inclusive": [(frame, share)], "self": [...]} (idle waits included)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"inclusive": [], "self": []}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            if not frame.endswith(_PLUMBING):
                inclusive[frame] += n
    if total == 0:
        return {"inclusive": [], "self": []}
    return {
        "inclusive": [(f, n / total) for f, n in inclusive.most_common(top)],
        "self": [(f, n / total) for f, n in own.most_common(top)],
    }


def _short(frame: str) -> str:
    """'tick (beatd/tick.py:69)' -> 'tick (beatd/tick.py)': lines split one function apart."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"
