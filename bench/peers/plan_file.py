"""A Plan as a JSON file, for the peer processes that read it (Celery beat, APScheduler)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness.workloads import PROBE, Burst, Interval

if TYPE_CHECKING:
    from bench.harness.measure import Plan, Settings


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


def write_for(run: Plan, settings: Settings, filename: str) -> Path:
    """The plan a peer process reads, written into the run's work directory."""
    peer = PeerPlan(
        settings.amqp_url,
        run.db_url,
        run.queue,
        run.probe_queue,
        run.intervals,
        run.burst,
        run.probe,
    )
    return write(run.workdir / filename, peer)


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
