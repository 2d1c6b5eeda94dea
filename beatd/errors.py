"""Every error beatd lets a user see, as one tree.

    BeatdError                  one clear line; the CLI prints it and exits 1
    ├── ConfigError             bad input (TOML, flags, API arguments); exit 2
    │   └── ScheduleError       names the schedule and the key
    ├── NotFound                no schedule of that name
    ├── Conflict                name exists / owned by the file
    │   └── AlreadyExists       a schedule of that name exists (replace it to change it)
    ├── StoreError              the database failed or is unreachable
    │   ├── SchemaError         tables missing or from a newer beatd
    │   └── Fenced              this instance's lease epoch is no longer current
    └── BrokerError             the broker refused, went away or is unreachable

Adapters map their library's exceptions into this tree at the boundary, so no
sqlalchemy or pika exception escapes into the core or the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence


class BeatdError(Exception):
    """Root of beatd's errors; str() is one line fit to show a user."""

    exit_code = 1


class ConfigError(BeatdError):
    """Invalid configuration or arguments; may carry several problems."""

    exit_code = 2

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


class ScheduleError(ConfigError):
    """A problem with one key of one schedule."""

    def __init__(self, schedule: str, key: str, message: str) -> None:
        self.schedule = schedule
        self.key = key
        text = (
            f"schedule {schedule!r}: {key}: {message}"
            if key
            else f"schedule {schedule!r}: {message}"
        )
        super().__init__(text)


class NotFound(BeatdError):
    """No schedule of that name."""


class Conflict(BeatdError):
    """The name exists already, or the file owns it."""

    exit_code = 2


class AlreadyExists(Conflict):
    """A schedule of that name exists; adding it again needs replace."""


class StoreError(BeatdError):
    """The database failed; transient unless a subclass says otherwise."""


class SchemaError(StoreError):
    """The database has no beatd tables, or tables of another version."""

    exit_code = 2


class Fenced(StoreError):
    """A write was refused because this instance no longer holds the lease."""


class BrokerError(BeatdError):
    """The broker refused a message or could not be reached."""
