"""Imported schedules as `[schedules.NAME]` tables for beatd.toml, each under a comment
naming its source. Values are written from JSON-like data: strings, numbers,
booleans, arrays and tables; TOML has no null, so a None is refused (ValueError)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from beatd.importers import Imported

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def key(text: str) -> str:
    """A TOML key: bare when it may be, else a quoted string."""
    return text if _BARE.fullmatch(text) else string(text)


def string(text: str) -> str:
    # JSON's escapes are TOML's basic-string escapes; TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def value(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if not math.isfinite(item):
            raise ValueError(f"{item!r} is not a JSON number")
        return repr(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, list | tuple):
        return "[" + ", ".join(value(v) for v in item) + "]"
    if isinstance(item, Mapping):
        return "{ " + ", ".join(f"{key(str(k))} = {value(v)}" for k, v in item.items()) + " }"
    if item is None:
        raise ValueError("holds null, which TOML cannot write (import with --to-database)")
    raise ValueError(f"{type(item).__name__} is not a JSON value")


def comment(text: str) -> str:
    """`# text`, one line per line of text, control characters escaped."""
    lines = str(text).splitlines() or [""]
    return "\n".join(
        "# " + "".join(ch if ch.isprintable() else "?" for ch in line) for line in lines
    )


def table(imported: Imported) -> str:
    """One schedule's comment and table; ValueError when a value cannot be written."""
    entry = imported.entry
    lines = [comment(f"from {entry.origin}")]
    lines += [comment(f"note: {note}") for note in entry.notes]
    if entry.disabled:
        lines.append(comment(f"disabled: {entry.disabled}"))
    lines.append(f"[schedules.{key(entry.name)}]")
    for name, item in entry.table.items():
        try:
            lines.append(f"{key(name)} = {value(item)}")
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if entry.disabled:
        lines.append("enabled = false")
    return "\n".join(lines) + "\n"


def document(header: str, tables: Iterable[str]) -> str:
    return comment(header) + "\n\n" + "\n".join(tables)
