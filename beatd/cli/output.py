"""Printing helpers shared by the commands: aligned tables, JSON, instants, "in 3 min"."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], file: TextIO | None = None
) -> None:
    """Left-aligned columns, two spaces apart, upper-case headers; trailing blanks trimmed."""
    out = file if file is not None else sys.stdout
    cells = [[str(h).upper() for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def print_json(value: Any, file: TextIO | None = None) -> None:
    """One JSON document, indented, with instants as ISO-8601 strings."""
    out = file if file is not None else sys.stdout
    print(json.dumps(value, indent=2, default=_jsonable), file=out)


def _jsonable(value: object) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def iso_utc(at: datetime) -> str:
    """'2026-12-01T08:00:00Z': the instant in UTC, whole seconds unless it has a fraction."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_local(at: datetime) -> str:
    """'2026-12-01T09:00:00+01:00': ISO-8601 with the offset of at's own zone."""
    return at.isoformat()


def table_time(at: datetime) -> str:
    """'2026-12-01 09:00:00 +01:00' in at's own zone; '2026-12-01 08:00:00Z' for UTC."""
    if at.utcoffset() is None or at.tzinfo is UTC:
        return at.strftime("%Y-%m-%d %H:%M:%SZ")
    offset = at.strftime("%z")
    return f"{at.strftime('%Y-%m-%d %H:%M:%S')} {offset[:3]}:{offset[3:5]}"


_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def relative(at: datetime, now: datetime) -> str:
    """'in 3 min', 'in 1 h 30 min', '5 s ago': how far `at` is from `now`, roughly."""
    seconds = round((at - now).total_seconds())
    span = abs(seconds)
    if span == 0:
        return "now"
    index = next(i for i, (size, _) in enumerate(_UNITS) if span >= size)
    size, unit = _UNITS[index]
    amount, rest = divmod(span, size)
    text = f"{amount} {unit}"
    if amount < 10 and index + 1 < len(_UNITS):
        small_size, small_unit = _UNITS[index + 1]
        if rest // small_size:
            text += f" {rest // small_size} {small_unit}"
    return f"in {text}" if seconds > 0 else f"{text} ago"
