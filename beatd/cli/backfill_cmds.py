"""`beatd backfill`: record the instants of a range not fired yet, and report what became of them.

The leader sends what backfill records. The command waits (`--wait`, while a
leader runs) until none of its fires is still unsent, then prints one line:
how many instants the range holds, how many were recorded now, and how many
of those went out, expired unsent, failed or are still pending.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

from beatd.api import MAX_HISTORY, Backfill, Beat, opened
from beatd.cli.config_cmds import NAIVE, parse_instant
from beatd.cli.main import add_command
from beatd.model import Outcome

BACKFILL_WAIT = 10.0  # seconds backfill waits, by default, for a running leader to send
POLL = 0.2  # seconds between backfill's looks at what is still unsent


def register(sub: argparse._SubParsersAction[Any]) -> None:
    backfill = add_command(
        sub,
        "backfill",
        "record every instant of a range not fired yet, for the leader to send, and report "
        "what became of them",
        _backfill,
    )
    backfill.add_argument("name", help="the schedule's name")
    backfill.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="ISO",
        help=f"first instant of the range ({NAIVE})",
    )
    backfill.add_argument(
        "--to",
        dest="end",
        required=True,
        metavar="ISO",
        help=f"last instant of the range, included ({NAIVE})",
    )
    backfill.add_argument(
        "--wait",
        metavar="SECONDS",
        type=float,
        default=BACKFILL_WAIT,
        help=f"how long to wait for a running leader to send them (default {BACKFILL_WAIT:g})",
    )


def _backfill(args: argparse.Namespace) -> int:
    start, end = parse_instant("--from", args.start), parse_instant("--to", args.end)
    with opened(args.config) as beat:
        result = beat.backfill(args.name, start, end)
        leader = _wait_for_leader(beat, result, args.wait)
        outcomes = _outcomes(beat, result)
    print(_backfill_report(result, outcomes, leader))
    return 0


def _wait_for_leader(beat: Beat, result: Backfill, wait: float) -> bool:
    """Wait (at most `wait` s) while a leader runs and some of the fires are unsent.

    Returns whether a leader holds the lease.
    """
    deadline = time.monotonic() + wait
    while True:
        leader = beat.store.current() is not None
        unsent = _outcomes(beat, result)["pending"]
        if not leader or not unsent or time.monotonic() >= deadline:
            return leader
        time.sleep(POLL)


def _outcomes(beat: Beat, result: Backfill) -> Counter[str]:
    """What became of the fires recorded now, by outcome ("expired" for those that expired)."""
    if not result.recorded:
        return Counter()
    ids = set(result.recorded)
    records = [r for r in beat.history(result.schedule, MAX_HISTORY) if r.fire_id in ids]
    return Counter(
        "expired"
        if r.outcome is Outcome.FAILED and (r.reason or "").startswith("expired")
        else str(r.outcome)
        for r in records
    )


def _backfill_report(result: Backfill, outcomes: Counter[str], leader: bool) -> str:
    """One line: the range's instants, what was recorded now, and what became of it."""
    recorded = len(result.recorded)
    line = f"backfill {result.schedule}: {result.instants} instants in range, {recorded} recorded"
    if result.instants > recorded:
        line += f" ({result.instants - recorded} were recorded before)"
    if not recorded:
        return line
    parts = [
        f"{count} {_WORDS.get(outcome, outcome)}"
        for outcome, count in outcomes.items()
        if outcome != Outcome.PENDING
    ]
    pending = outcomes.get(str(Outcome.PENDING), 0)
    if pending:
        who = "the leader has not sent them yet" if leader else "no leader is running"
        if result.expired:
            later = f"{min(pending, result.expired)} of them are past their expires: never sent"
        else:
            later = "it sends them" if leader else "the next leader sends them"
        parts.append(f"{pending} pending ({who}; {later})")
    return f"{line}: " + ", ".join(parts)


_WORDS = {
    "sent": "sent",
    "expired": "expired unsent (past their expires)",
    "failed": "failed (see beatd history)",
}
