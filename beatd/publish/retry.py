"""How often a publisher may try to reach its broker again: a value and a gate.

A publisher never sleeps: while its backoff runs, ``publish`` fails fast with
BrokerError and the caller (the relay) keeps the batch and paces its own
retries. The first attempt after a working connection is lost is immediate;
each failed attempt doubles the wait, up to ``max``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff: initial, initial·multiplier, ... up to max (seconds)."""

    initial: float = 0.5
    max: float = 5.0  # a returning broker gets its backlog within seconds
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.max < self.initial or self.multiplier < 1:
            raise ValueError(f"invalid retry policy {self!r}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` consecutive failed attempts (0 for none)."""
        if failures <= 0:
            return 0.0
        # Cap the exponent too, so a long outage cannot overflow the float.
        return min(self.max, self.initial * self.multiplier ** min(failures - 1, 64))


class Backoff:
    """Tracks consecutive failures against a monotonic clock (not thread-safe)."""

    def __init__(
        self, policy: RetryPolicy, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._monotonic = monotonic
        self.failures = 0
        self.last_error: str | None = None
        self._not_before = 0.0

    def remaining(self) -> float:
        """Seconds until the next attempt is allowed; 0 when it is allowed now."""
        return max(0.0, self._not_before - self._monotonic())

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self._not_before = self._monotonic() + self.policy.delay(self.failures)

    def succeeded(self) -> None:
        self.failures = 0
        self.last_error = None
        self._not_before = 0.0
