"""Sum the fault suite's books over many runs: one row per scenario.

BEATD_FAULTS_REPORT=/tmp/faults.jsonl .venv/bin/pytest -m faults tests/faults  # repeat
.venv/bin/python tests/faults/faults_report.py /tmp/faults.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

COLUMNS = ("runs", "faults", "expected", "recorded", "delivered", "duplicates", "lost")


def summarize(lines: list[str]) -> str:
    rows: dict[str, dict[str, Any]] = defaultdict(
        lambda: {**dict.fromkeys(COLUMNS, 0), "late": 0.0, "failed": 0}
    )
    for line in lines:
        if not line.strip():
            continue
        books = json.loads(line)
        row = rows[books["scenario"]]
        row["runs"] += 1
        row["failed"] += bool(books["problems"])
        for key in COLUMNS[1:]:
            row[key] += books[key]
        row["late"] = max(row["late"], books["max_deliver_late"])
    head = "| scenario | " + " | ".join(COLUMNS) + " | max delivery lateness | runs with problems |"
    out = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for name, row in rows.items():
        cells = " | ".join(str(row[c]) for c in COLUMNS)
        out.append(f"| {name} | {cells} | {row['late']:.2f} s | {row['failed']} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1]).read_text().splitlines()))
