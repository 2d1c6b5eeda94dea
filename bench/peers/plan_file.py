"""A Plan as a JSON file, for the peer processes that read it (Celery beat, APScheduler)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness.workloads import PROBE, Burst, Interval


@dataclass(frozen=True)
class PeerPlan:
    amqp_url: str
    db_url: str
    queue: str
    probe_queue: str
    intervals: list[Interval]
    burst: Burst | None
    probe: Interval = PROBE


def write(path: Path, plan: PeerPlan) -> Path:
    document: dict[str, Any] = {
        "amqp_url": plan.amqp_url,
        "db_url": plan.db_url,
        "queue": plan.queue,
        "probe_queue": plan.probe_queue,
        "intervals": [[i.name, i.period, i.offset] for i in plan.intervals],
        "burst": None if plan.burst is None else [plan.burst.n, plan.burst.every],
        "probe": [plan.probe.name, plan.probe.period, plan.probe.offset],
    }
    path.write_text(json.dumps(document))
    return path


def read(path: str | Path) -> PeerPlan:
    document = json.loads(Path(path).read_text())
    burst = document["burst"]
    return PeerPlan(
        amqp_url=document["amqp_url"],
        db_url=document["db_url"],
        queue=document["queue"],
        probe_queue=document["probe_queue"],
        intervals=[Interval(*row) for row in document["intervals"]],
        burst=None if burst is None else Burst(*burst),
        probe=Interval(*document["probe"]),
    )
