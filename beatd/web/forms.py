"""The schedule form: its fields, what a submission asks `Beat.add` for, problems by field.

A field is read as the CLI reads its flag (`read_option`: JSON, whole
numbers), has the flag's help, and the schedule is validated by `Beat.parse`,
the codec every other path uses, so the messages are the CLI's. Each message is shown next
to the field its key names; an empty field means "not set".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from beatd.cli.schedule_cmds import OPTION_CHOICES, OPTION_FLAGS, read_option
from beatd.codec import KEYS, KINDS, check_name, schedule_to_table
from beatd.errors import ConfigError
from beatd.model import Schedule

ORDER = (  # the options as the form groups them: what, when, missed fires, where, message
    "task", "args", "kwargs", "timezone", "anchor", "start", "end", "misfire", "grace",
    "jitter", "max_fires", "history_limit", "queue", "routing_key", "exchange", "priority",
    "expires", "format", "headers",
)  # fmt: skip
SPEC_HINTS: Mapping[str, str] = {
    "cron": "5 fields, or 6 with seconds first, e.g. */5 9-17 * * MON-FRI or @daily",
    "every": "a duration, e.g. 90s, 1h30m, 2d",
    "rrule": "RFC 5545, e.g. FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18",
    "at": "one ISO-8601 instant, e.g. 2026-12-01T09:00:00+01:00",
}


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    how: str  # text | json | int | instant | duration (as the CLI reads the flag)
    hint: str
    choices: tuple[str, ...] = ()


_FLAGS = {key: (how, hint) for _flag, key, how, hint in OPTION_FLAGS}  # the CLI's help
FIELDS: tuple[Field, ...] = tuple(
    Field(key, *_FLAGS[key], OPTION_CHOICES.get(key, ())) for key in ORDER
)
_FIELD_KEYS = ("name", "kind", "spec", *(f.key for f in FIELDS))


@dataclass
class Submission:
    """What the user typed (to show again) and the options and problems read from it."""

    values: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.values["name"]

    def problem(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)


def blank() -> dict[str, str]:
    """An empty form: a cron schedule, enabled."""
    values = dict.fromkeys(_FIELD_KEYS, "")
    values.update(kind="cron", enabled="on")
    return values


def read(form: Mapping[str, str]) -> Submission:
    """The options the form asks for; a field the CLI could not read either gets its message."""
    values = {key: str(form.get(key, "")) for key in _FIELD_KEYS}
    values["enabled"] = "on" if form.get("enabled") else ""
    sub = Submission(values)
    kind = values["kind"]
    if kind not in KINDS:
        sub.problem("spec", f"choose one of {', '.join(KINDS)}")
    elif values["spec"].strip():
        sub.options[kind] = values["spec"]
    for f in FIELDS:
        raw = values[f.key]
        if raw.strip():
            try:
                sub.options[f.key] = read_option(f.key, f.how, raw)
            except ConfigError as exc:
                sub.problem(f.key, str(exc))
    if not values["enabled"]:
        sub.options["enabled"] = False
    return sub


def place(sub: Submission, problems: Sequence[str]) -> None:
    """File the codec's lines (`schedule 'n': key: why`) under their keys' fields.

    A line naming no key is about the name (a bad name is all the codec
    says then) or, for a good name, about the missing kind.
    """
    prefix = f"schedule {sub.name!r}: "
    for line in problems:
        key = line[len(prefix) :].split(":", 1)[0] if line.startswith(prefix) else ""
        if key in KINDS:
            key = "spec"
        elif key not in KEYS:
            key = "name" if check_name(sub.name) is not None else "spec"
        sub.problem(key, line)


def values_of(schedule: Schedule) -> dict[str, str]:
    """The form filled in with a stored schedule, for editing it."""
    table = schedule_to_table(schedule)
    values = blank()
    values.update(name=schedule.name, kind=schedule.kind, spec=str(table[schedule.kind]))
    hows = {f.key: f.how for f in FIELDS}
    for key, value in table.items():
        if key in hows:
            values[key] = json.dumps(value) if hows[key] == "json" else str(value)
    values["enabled"] = "on" if schedule.enabled else ""
    return values
