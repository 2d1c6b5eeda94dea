"""beatd: decides when jobs run and publishes them to RabbitMQ.

The public API; everything else is internal and may change.
"""

from beatd.api import Beat
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
from beatd.model import Cron, Every, Fire, FireRecord, Misfire, Once, Outcome, RRule, Schedule
from beatd.views import ScheduleInfo

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
