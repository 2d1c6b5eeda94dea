"""Two in-process daemons sharing four partitions over memory and PostgreSQL.

The first takes all four; when the second joins, the first hands two over
(its share is now two); when the second stops (SIGTERM's path), the first
takes them back within two leases. The books: every instant of every
schedule recorded once and sent once, whoever held its partition.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_daemon_inprocess import Lines, Running, wait_for

from beatd.api import Beat
from beatd.cli.main import main
from beatd.config import Settings
from beatd.daemon import Daemon
from beatd.http import HttpServer
from beatd.model import Every, Misfire, Outcome, Partition, Schedule, bucket
from beatd.publish.stdout import StdoutPublisher
from beatd.store import open_store
from beatd.store.base import Store
from beatd.store.memory import MemoryStore
from beatd.store.sql import migrate

LEASE = timedelta(seconds=3)
P = 4
SCHEDULES = tuple(
    Schedule(name=f"job-{i}", spec=Every(timedelta(seconds=1)), task="t.job", misfire=Misfire.ALL)
    for i in range(12)
)


@dataclass
class Shared:
    """Two stores over one database, as two processes would have (and its URL, for the CLI)."""

    first: Store
    second: Store
    url: str | None = None


@pytest.fixture(params=["memory", "postgres"])
def stores(request: pytest.FixtureRequest) -> Iterator[Shared]:
    if request.param == "memory":
        memory = MemoryStore()
        yield Shared(memory, memory)
        memory.close()
        return
    url = str(request.getfixturevalue("pg_url"))
    migrate.upgrade(url)
    shared = Shared(open_store(url), open_store(url), url)
    yield shared
    shared.first.close()
    shared.second.close()


def status(url: str, tmp: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    config = tmp / "beatd.toml"
    config.write_text(f'[beatd]\ndatabase = "{url}"\npartitions = {P}\n')
    assert main(["--config", str(config), "status", "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def held(daemon: Daemon) -> int:
    return len(daemon.crew.held())


def test_two_instances_share_partitions_and_sigterm_hands_them_back(
    stores: Shared, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert {i for s in SCHEDULES for i in range(P) if Partition(i, P).owns(s.name)} == set(
        range(P)
    )  # every partition has work
    settings = Settings(database="memory://", lease=LEASE, partitions=P, schedules=SCHEDULES)
    out_a, out_b = Lines(), Lines()
    a = Running(Daemon(settings, stores.first, StdoutPublisher(out_a)))
    b: Running | None = None
    try:
        wait_for(lambda: held(a.daemon) == P, 10, "the first instance holding every partition")
        b = Running(Daemon(settings, stores.second, StdoutPublisher(out_b)))
        two_leases = 2 * LEASE.total_seconds()
        wait_for(
            lambda: held(a.daemon) == held(b.daemon) == 2, two_leases + 2, "two partitions each"
        )
        wait_for(lambda: len(out_b.lines()) >= 20, 10, "the second instance publishing")
        if stores.url is not None:
            report = status(stores.url, tmp_path, capsys)
            assert report["leader"] is None  # no one leader: each partition has its own
            assert [p["partition"] for p in report["partitions"]] == list(range(P))
            assert all(p["holder"] and p["epoch"] for p in report["partitions"])
            held_by = sorted(len(i.get("partitions", [])) for i in report["instances"])
            assert held_by == [2, 2]
        assert b.stop() == 0
        b = None
        wait_for(lambda: held(a.daemon) == P, two_leases, "the first taking them all back")
        seen = len(out_a.lines())
        wait_for(lambda: len(out_a.lines()) >= seen + 2 * len(SCHEDULES), 10, "fires after it")
        assert a.daemon.healthy()
    finally:
        if b is not None:
            b.stop()
        assert a.stop() == 0
    store = stores.first
    assert store.leases() == []  # everything released at SIGTERM
    assert store.backlog() == 0
    published = Counter(str(line["fire_id"]) for line in out_a.lines() + out_b.lines())
    assert [fid for fid, n in published.items() if n > 1] == []  # nobody was killed: no repeat
    fires = store.history(None, 100_000)
    assert {f.fire_id for f in fires} == set(published)
    assert {f.outcome for f in fires} == {Outcome.SENT}
    for schedule in SCHEDULES:
        instants = sorted(f.scheduled_for for f in fires if f.schedule == schedule.name)
        span = int((instants[-1] - instants[0]).total_seconds()) + 1
        assert len(instants) == len(set(instants)) == span, schedule.name  # once, no gap
    assert len({f.epoch for f in fires}) >= P + 2  # handed over, then taken back


def scrape(server: HttpServer) -> dict[tuple[str, str], float]:
    """/metrics as {(sample, partition label): value}; "" for no label, buckets left out."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, sample.labels.get("partition", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels.keys() - {"partition"}
    }


def terms(daemon: Daemon) -> dict[str, int]:
    """The partitions an instance holds (as labels) and the epoch it holds each at."""
    return {str(x.partition.index): x.lease.epoch if x.lease else 0 for x in daemon.crew.held()}


WORK = ("beatd_fires_recorded_total", "beatd_fires_sent_total", "beatd_fire_lag_seconds_count")


def grew(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> set[str]:
    """The partitions in which every per-fire counter went up between two scrapes."""
    labels = {label for name, label in after if name in WORK}
    return {
        label
        for label in labels
        if all(after.get((n, label), 0) > before.get((n, label), 0) for n in WORK)
    }


@pytest.mark.parametrize("stores", ["postgres"], indirect=True)
def test_each_instances_metrics_carry_the_partitions_it_works_on(stores: Shared) -> None:
    settings = Settings(database="memory://", lease=LEASE, partitions=P, schedules=SCHEDULES)
    a = Running(Daemon(settings, stores.first, StdoutPublisher(Lines())))
    b = Running(Daemon(settings, stores.second, StdoutPublisher(Lines())))
    servers = [HttpServer("127.0.0.1:0", x.daemon.metrics, x.daemon.problems) for x in (a, b)]
    try:
        wait_for(
            lambda: held(a.daemon) == held(b.daemon) == 2,
            2 * LEASE.total_seconds() + 5,
            "two partitions each",
        )
        held_before = [terms(a.daemon), terms(b.daemon)]
        before = [scrape(server) for server in servers]
        mine = [set(t) for t in held_before]
        assert mine[0].isdisjoint(mine[1]) and mine[0] | mine[1] == {str(i) for i in range(P)}
        after: list[dict[tuple[str, str], float]] = []

        def worked() -> bool:  # every partition each instance holds did work since `before`
            after[:] = [scrape(server) for server in servers]
            return all(grew(x, y) >= m for x, y, m in zip(before, after, mine, strict=True))

        wait_for(worked, 10, "fires in every partition, published by its holder")
        assert [terms(a.daemon), terms(b.daemon)] == held_before  # nothing moved meanwhile
        for x, y, m in zip(before, after, mine, strict=True):
            assert grew(x, y) == m  # the per-fire work of the others' partitions stood still
            labels = {label for name, label in y if name == "beatd_fires_sent_total"}
            assert labels == {str(i) for i in range(P)}  # bounded: P series, no more
            holds = {label for (name, label), v in y.items() if name == "beatd_partition_held"}
            assert {label for label in holds if y[("beatd_partition_held", label)] == 1} == m
            assert y[("beatd_is_leader", "")] == 1
            backlog = {label: v for (name, label), v in y.items() if name == "beatd_backlog"}
            assert set(backlog) == {str(i) for i in range(P)}
            assert all(v == 0 for label, v in backlog.items() if label not in m)
    finally:
        for server in servers:
            server.close()
        assert b.stop() == 0
        assert a.stop() == 0


def published(out: Lines, name: str | None = None) -> dict[str, datetime]:
    """What an instance published (of `name`): fire id -> scheduled instant."""
    return {
        str(line["fire_id"]): datetime.fromisoformat(str(line["scheduled_for"]))
        for line in out.lines()
        if name is None or line["schedule"] == name
    }


@pytest.mark.parametrize("stores", ["postgres"], indirect=True)
def test_commands_work_whichever_instance_holds_the_schedules_partition(
    stores: Shared, tmp_path: Path
) -> None:
    """The API holds no lease: what it records or changes is done by the partition's holder.

    For a schedule of each instance's partitions: a trigger and a backfill go
    out from its holder only; a pause stops it there and a resume starts it
    again; a schedule added lands on the holder of its partition; history,
    list and upcoming show every partition's schedules, whoever holds them.
    """
    config = tmp_path / "beatd.toml"
    config.write_text(f'[beatd]\ndatabase = "{stores.url}"\npartitions = {P}\n')
    names = [s.name for s in SCHEDULES]
    settings = Settings(database="memory://", lease=LEASE, partitions=P)  # API schedules only
    outs = {"a": Lines(), "b": Lines()}
    with Beat.from_config(config) as beat:
        for name in names:
            beat.add(name, every="1s", task="t.job")
        added = datetime.now(UTC)
        a = Running(Daemon(settings, stores.first, StdoutPublisher(outs["a"])))
        b = Running(Daemon(settings, stores.second, StdoutPublisher(outs["b"])))
        try:
            wait_for(
                lambda: held(a.daemon) == held(b.daemon) == 2,
                2 * LEASE.total_seconds() + 5,
                "two partitions each",
            )
            holds = {who: set(terms(x.daemon)) for who, x in (("a", a), ("b", b))}

            def holder(name: str) -> str:
                return "a" if str(bucket(name) % P) in holds["a"] else "b"

            def other(who: str) -> str:
                return "b" if who == "a" else "a"

            mine = {who: next(n for n in names if holder(n) == who) for who in "ab"}

            assert sorted(i.schedule.name for i in beat.list()) == sorted(names)
            assert {f.schedule for f in beat.upcoming(limit=3 * len(names))} == set(names)
            wait_for(
                lambda: {r.schedule for r in beat.history(None, 1000)} == set(names),
                10,
                "history of every partition's schedules",
            )

            for who, name in mine.items():
                triggered = beat.trigger(name)
                start = added.replace(microsecond=0) - timedelta(seconds=30)
                backfilled = beat.backfill(name, start, start + timedelta(seconds=2)).recorded
                assert len(backfilled) == 3
                wanted = {triggered, *backfilled}
                wait_for(
                    lambda w=who, f=wanted: f <= set(published(outs[w])),  # type: ignore[misc]
                    10,
                    f"{name}'s trigger and backfill from the holder of its partition",
                )
                assert not wanted & set(published(outs[other(who)]))
                wait_for(
                    lambda n=name, f=wanted: all(  # type: ignore[misc]
                        r.outcome is Outcome.SENT for r in beat.history(n, 1000) if r.fire_id in f
                    ),
                    5,
                    "the fires marked sent",
                )
                assert [r.manual for r in beat.history(name, 1000) if r.fire_id == triggered] == [
                    True
                ]

            name = mine["b"]
            beat.pause(name, note="maintenance")
            paused = datetime.now(UTC)
            wait_for(  # the holder goes on with its other schedules well past the pause
                lambda: max(published(outs["b"]).values()) > paused + timedelta(seconds=3),
                10,
                "the holder's fires three seconds past the pause",
            )
            late = [at for o in outs.values() for at in published(o, name).values()]
            assert [at for at in late if at > paused + timedelta(seconds=1)] == []
            beat.resume(name)
            resumed = datetime.now(UTC)
            wait_for(
                lambda: any(at > resumed for at in published(outs["b"], name).values()),
                10,
                f"{name} published again by its holder after the resume",
            )

            new = next(n for n in (f"new-{i}" for i in range(100)) if holder(n) == "a")
            beat.add(new, every="1s", task="t.new")
            wait_for(lambda: published(outs["a"], new), 10, f"{new} published by its holder")
            assert published(outs["b"], new) == {}
            assert published(outs["a"], mine["b"]) == {}  # a never sent b's schedule
        finally:
            assert b.stop() == 0
            assert a.stop() == 0
