"""Fire ids, the message id of every fire: UUIDv5 of the name and the UTC instant, as documented."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from beatd.ids import NAMESPACE, fire_id

NAMES = ["job", "", "nightly-report", "ünïcødé ✓ 日本", "a\x00b", "x" * 300]


def documented(name: str, instant: datetime) -> str:
    """The definition in beatd/ids.py, through the standard library."""
    stamp = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(uuid.uuid5(NAMESPACE, f"{name}\x00{stamp}"))


def instants(count: int) -> list[datetime]:
    rng = random.Random(20261127)
    found = []
    for _ in range(count):
        year = rng.choice([rng.randrange(2, 10000), rng.randrange(2000, 2100)])
        at = datetime(year, rng.randrange(1, 13), rng.randrange(1, 29), tzinfo=UTC)
        at += timedelta(seconds=rng.randrange(86400))
        if rng.random() < 0.5:
            at += timedelta(microseconds=rng.randrange(1, 10**6))
        found.append(at)
    return found


def test_fire_id_is_uuid5_of_name_and_utc_stamp() -> None:
    rng = random.Random(7)
    for at in instants(3000):
        name = rng.choice(NAMES)
        assert fire_id(name, at) == documented(name, at)


@pytest.mark.parametrize(
    "at",
    [
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(5, 6, 7, 8, 9, 10, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1000, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=["year-1", "year-5", "year-999", "year-1000", "year-9999"],
)
def test_fire_id_at_the_ends_of_the_calendar(at: datetime) -> None:
    assert fire_id("job", at) == documented("job", at)


@pytest.mark.parametrize(
    "zone", [ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), timezone(timedelta(hours=-3, minutes=-30))]
)
def test_the_same_instant_in_any_zone_has_the_same_id(zone: ZoneInfo | timezone) -> None:
    for at in instants(200):
        if at.year >= 3:  # room for the offset
            assert fire_id("job", at.astimezone(zone)) == fire_id("job", at)


def test_fire_id_is_a_version_5_rfc_4122_uuid() -> None:
    parsed = uuid.UUID(fire_id("job", datetime(2026, 1, 1, tzinfo=UTC)))
    assert parsed.version == 5 and parsed.variant == uuid.RFC_4122


def test_fire_id_refuses_a_naive_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        fire_id("job", datetime(2026, 1, 1))
