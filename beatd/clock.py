"""Where the time comes from. Only the daemon and the CLI read a real clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for pacing only."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock tests move by hand; thread-safe."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._mono = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, delta: timedelta | float) -> None:
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self._now += step
            self._mono += step.total_seconds()

    def set(self, instant: datetime) -> None:
        """Jump the wall clock (monotonic time does not follow)."""
        with self._lock:
            self._now = instant.astimezone(UTC)


TEST_OFFSET_ENV = "BEATD_TEST_CLOCK_OFFSET_FILE"
"""Fault tests only: a file holding seconds to add to this instance's wall clock."""


class OffsetClock:
    """The system clock shifted by the number of seconds in a file, re-read as it changes.

    Simulates a wall-clock jump on one instance (the fault suite writes the
    file while the daemon runs); monotonic time is untouched, as on a real
    host whose clock is stepped. A missing or unreadable file means 0.
    """

    REREAD = 0.05  # seconds between reads of the file

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = timedelta(0)
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def _current(self) -> timedelta:
        with self._lock:
            mono = time.monotonic()
            if mono - self._read_at >= self.REREAD:
                self._read_at = mono
                try:
                    with open(self.path) as handle:
                        self._offset = timedelta(seconds=float(handle.read().strip() or 0))
                except (OSError, ValueError, OverflowError):
                    self._offset = timedelta(0)
            return self._offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self._current()

    def monotonic(self) -> float:
        return time.monotonic()


def clock_from_env(env: Mapping[str, str]) -> Clock:
    """SystemClock, or an OffsetClock when the fault tests ask for one."""
    path = env.get(TEST_OFFSET_ENV)
    return OffsetClock(path) if path else SystemClock()
