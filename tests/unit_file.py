"""Reads systemd/beatd.service the way systemd does, for the tests that check it."""

from __future__ import annotations

from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "beatd.service"


def read_unit(path: Path = UNIT) -> dict[str, list[str]]:
    """Every `Section.Key`'s values, in order (a key may repeat); comments skipped."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"continuation lines are not read here: {line}"
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries
