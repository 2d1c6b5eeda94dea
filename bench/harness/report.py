"""Results, the printed table (with beatd's figures as ratios to each peer) and the JSON file."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# (key, heading, format, lower_is_better)
COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("lag_p50_ms", "p50 ms", "{:.1f}", True),
    ("lag_p99_ms", "p99 ms", "{:.1f}", True),
    ("lag_max_ms", "max ms", "{:.0f}", True),
    ("cpu_s_per_min", "CPU s/min", "{:.2f}", True),
    ("pg_cpu_s_per_min", "PG CPU s/min", "{:.2f}", True),
    ("peak_rss_mb", "RSS MB", "{:.0f}", True),
    ("fires_per_s", "fires/s", "{:.0f}", False),
    ("seconds", "seconds", "{:.2f}", True),
)


@dataclass
class Result:
    system: str
    workload: str  # e.g. "steady-10000", "burst-10000"
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return pattern.format(value)


def table(results: Sequence[Result]) -> str:
    """One row per (system, workload), then beatd's advantage over each peer."""
    heads = ["system", "workload"] + [c[1] for c in COLUMNS] + ["notes"]
    rows = []
    for r in results:
        if r.skipped:
            rows.append([r.system, r.workload] + ["-"] * len(COLUMNS) + [f"skipped: {r.skipped}"])
            continue
        cells = [_fmt(r.metrics.get(key), pattern) for key, _, pattern, _ in COLUMNS]
        rows.append([r.system, r.workload, *cells, "; ".join(r.notes)])
    lines = _grid(heads, rows)
    ratios = _ratios(results)
    if ratios:
        lines += ["", "beatd's advantage (x > 1 means beatd is better: peer/beatd for"]
        lines += ["lags, CPU, RSS and seconds; beatd/peer for fires/s):"]
        lines += _grid(["workload", "vs peer"] + [c[1] for c in COLUMNS], ratios)
    return "\n".join(lines)


def _ratios(results: Sequence[Result]) -> list[list[str]]:
    beatd = {r.workload: r for r in results if r.system == "beatd" and not r.skipped}
    rows = []
    for peer in results:
        if peer.system == "beatd" or peer.skipped:
            continue
        mine = beatd.get(peer.workload) or beatd.get(_comparable(peer.workload))
        if mine is None:
            continue
        cells = []
        for key, _, _, lower in COLUMNS:
            a, b = mine.metrics.get(key), peer.metrics.get(key)
            if not _number(a) or not _number(b) or a == 0 or b == 0:
                cells.append("-")
                continue
            cells.append(f"x{(b / a) if lower else (a / b):.2f}")
        rows.append([mine.workload, peer.system, *cells])
    return rows


def _comparable(workload: str) -> str:
    """The raw pika ceiling of n messages compares with beatd's burst of n."""
    return workload.replace("ceiling-", "burst-")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _grid(heads: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    return [line(heads), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_end": os.getloadavg(),
    }


def write_json(
    path: Path, results: Sequence[Result], options: dict[str, Any], verdicts: Sequence[str] = ()
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "options": options,
        "results": [asdict(r) for r in results],
        "targets": list(verdicts),
    }
    path.write_text(json.dumps(document, indent=2, default=_nan_safe) + "\n")


def _nan_safe(value: Any) -> Any:
    return str(value)
