"""Shared by the fuzz targets: example budget, zones, and a timed runner."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))

# Zones with the awkward transitions: 30-minute DST, a skipped day, DST at
# midnight, a zone that changed its base offset.
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "America/Santiago",
    "Asia/Tehran",
    "Africa/Casablanca",
    "America/Havana",
    "Pacific/Kiritimati",
)


def run_for(tests: Sequence[Callable[[], None]]) -> None:
    """Run the hypothesis tests round-robin until --seconds have passed; exit 1 on a find."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    rounds = 0
    while time.monotonic() < deadline:
        for test in tests:
            try:
                test()
            except Exception:
                traceback.print_exc()
                print(f"FOUND after {rounds} rounds in {test.__name__}", file=sys.stderr)
                sys.exit(1)
        rounds += 1
        print(f"round {rounds}: {rounds * EXAMPLES} examples per target, no find", flush=True)
    print(f"done: {rounds} rounds of {len(tests)} targets, {EXAMPLES} examples each, no find")
