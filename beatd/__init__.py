"""beatd: decides when jobs run and publishes them to RabbitMQ.

The public API; everything else is internal and may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from beatd.errors import (
    AlreadyExists,
    BeatdError,
    BrokerError,
    ConfigError,
    Conflict,
    Fenced,
    NotFound,
    ScheduleError,
    SchemaError,
    StoreError,
)

if TYPE_CHECKING:
    from beatd.api import Beat
    from beatd.model import (
        Cron,
        Every,
        Fire,
        FireRecord,
        Misfire,
        Once,
        Outcome,
        RRule,
        Schedule,
    )
    from beatd.views import ScheduleInfo

# Loaded on first use, so `import beatd.cli.main` stays light: `beatd run` catches its
# signals before the database and broker libraries are imported.
_LAZY = {
    "Beat": "beatd.api",
    "ScheduleInfo": "beatd.views",
    **dict.fromkeys(
        ("Cron", "Every", "Fire", "FireRecord", "Misfire", "Once", "Outcome", "RRule", "Schedule"),
        "beatd.model",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'beatd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "AlreadyExists",
    "Beat",
    "BeatdError",
    "BrokerError",
    "ConfigError",
    "Conflict",
    "Cron",
    "Every",
    "Fenced",
    "Fire",
    "FireRecord",
    "Misfire",
    "NotFound",
    "Once",
    "Outcome",
    "RRule",
    "Schedule",
    "ScheduleError",
    "ScheduleInfo",
    "SchemaError",
    "StoreError",
]
