"""The randomized differential run with new seeds: engine against the reference.

tests/timing/test_differential.py runs three fixed seeds in CI; this draws
new seeds (every IANA zone, 2000-2035) until time is up and prints each
mismatch with its seed, so a find is replayed with `run_seed(seed, count)`.

    .venv/bin/python -m pytest fuzz/fuzz_timing.py -p no:cacheprovider   # a quick pass
    .venv/bin/python fuzz/fuzz_timing.py --seconds 600                    # a long run
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "timing"))

from fuzz_support import EXAMPLES
from timing_reference import run_seed


def test_new_seeds_match_the_reference() -> None:
    seed = random.randrange(1 << 32)
    problems, _ = run_seed(seed, max(EXAMPLES // 4, 20))
    assert not problems, f"seed {seed}:\n" + "\n".join(problems[:5])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--cases", type=int, default=50, help="cases per seed")
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    seeds = cases = refused = found = 0
    while time.monotonic() < deadline:
        seed = random.randrange(1 << 32)
        problems, skipped = run_seed(seed, args.cases)
        seeds, cases, refused = seeds + 1, cases + args.cases, refused + skipped
        for problem in problems:
            print(f"seed {seed}: {problem}", flush=True)
        found += len(problems)
    print(f"{seeds} seeds, {cases} cases ({refused} refused by validation), {found} mismatches")
    sys.exit(1 if found else 0)
