"""Run beatd's benchmark suite beside Celery beat, APScheduler 3 and raw pika.

    .venv/bin/python bench/run.py                       # everything, full size (~45 min)
    .venv/bin/python bench/run.py --smoke               # every code path, tiny, ~2 min
    .venv/bin/python bench/run.py --workloads steady,burst --n 10000 --duration 60
    .venv/bin/python bench/run.py --workloads million --systems beatd --duration 120  # ~20 min
    .venv/bin/python bench/run.py --workloads partitioned            # 1 leader vs 2 x P=16, ~6 min
    .venv/bin/python bench/run.py --workloads partitioned-failover   # SIGKILL 1 of 2, ~3 min

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust; one database is
created and dropped per run) and RabbitMQ at 127.0.0.1:5672 (guest/guest);
override with BEATD_BENCH_PG / BEATD_BENCH_AMQP or --pg / --amqp. Prints a
table, with beatd's figures as ratios to each peer, and writes JSON
(default bench/results/latest.json). Each workload's docstring (bench/harness/
measure.py, bench/peers/) says what it measures.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import measure, procs, targets
from bench.harness.report import Result, table, write_json
from bench.harness.services import AMQP_URL, PG_ADMIN_URL
from bench.peers import beatd_million, beatd_partitioned, beatd_runner, pika_ceiling
from bench.peers.apscheduler_runner import APScheduler3
from bench.peers.celery_beat import CeleryBeat

WORKLOADS = (
    "steady",
    "burst",
    "ceiling",
    "startup",
    "toml",
    "catch-up",
    "failover",
    "million",
    "partitioned",
    "partitioned-failover",
)
SYSTEMS = ("beatd", "celery-beat", "apscheduler3", "pika")
PARTITIONED_WARMUP = 60.0  # seconds, at least (Suite.partitioned)
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument(
        "--n", type=int, default=None, help="schedules per workload (default: the issue's sizes)"
    )
    parser.add_argument("--steady-n", default="10000,100000", help="steady sizes, comma-separated")
    parser.add_argument(
        "--peers-max-n", type=int, default=10000, help="largest steady size peers run"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="steady window, seconds")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before the window")
    parser.add_argument(
        "--million-n",
        default="1000000,10000",
        help="million workload: schedules stored, and stored in its reference run",
    )
    parser.add_argument("--lease", type=int, default=5, help="failover lease, seconds")
    parser.add_argument("--rounds", type=int, default=10, help="failover rounds")
    parser.add_argument(
        "--partitions", type=int, default=16, help="partitioned workloads: [beatd] partitions"
    )
    parser.add_argument(
        "--instances", type=int, default=2, help="partitioned workloads: instances sharing them"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds each")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy each scheduler over its steady window (stacks beside the JSON)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="also report the results of an earlier run's JSON (repeatable)",
    )
    parser.add_argument("--pg", default=PG_ADMIN_URL, help="PostgreSQL admin URL")
    parser.add_argument("--amqp", default=AMQP_URL, help="RabbitMQ URL")
    return parser


def _log(text: str) -> None:
    print(text, flush=True)


class Suite:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        smoke = args.smoke
        self.settings = measure.Settings(
            amqp_url=args.amqp,
            pg_admin_url=args.pg,
            workdir=workdir,
            smoke=smoke,
            duration=min(args.duration, 5.0) if smoke else args.duration,
            warmup=1.0 if smoke else args.warmup,
            ready_timeout=90.0 if smoke else 900.0,
            drain=10.0 if smoke else 20.0,
            burst_timeout=30.0 if smoke else 300.0,
            log=_log,
            profile_dir=args.json.parent if args.profile else None,
        )
        self.results: list[Result] = []
        self.systems = [s for s in args.systems.split(",") if s]
        peers: list[measure.System] = [beatd_runner.Beatd(), CeleryBeat(), APScheduler3()]
        self.schedulers = [s for s in peers if s.name in self.systems]

    def size(self, full: int, smoke: int) -> int:
        if self.args.n is not None:
            return self.args.n
        return smoke if self.args.smoke else full

    def record(self, system: str, workload: str, run: Callable[[], Result]) -> None:
        _log(f"{system} {workload} ...")
        started = time.monotonic()
        try:
            result = run()
        except Exception as exc:
            traceback.print_exc()
            result = Result(system, workload, skipped=f"error: {str(exc).splitlines()[0][:120]}")
        figures = {k: v for k, v in result.metrics.items() if k != "profile"}
        _log(f"{system} {workload}: {time.monotonic() - started:.0f}s {figures or ''}")
        self.results.append(result)

    def scheduler_workload(self, kind: str, n: int, peers_too: bool = True) -> None:
        run = measure.steady if kind == "steady" else measure.burst
        for system in self.schedulers:
            if system.name != "beatd" and not peers_too:
                continue
            why = system.unavailable()
            if why is not None:
                _log(f"{system.name}: {why}")
                self.results.append(Result(system.name, f"{kind}-{n}", skipped=why))
                continue
            self.record(system.name, f"{kind}-{n}", lambda s=system: run(s, n, self.settings))

    def beatd_workload(self, workload: str, run: Callable[[], Result]) -> None:
        if "beatd" not in self.systems:
            return
        why = beatd_runner.Beatd().unavailable()
        if why is not None:
            _log(why)
            self.results.append(Result("beatd", workload, skipped=why))
            return
        self.record("beatd", workload, run)

    def run(self, workloads: list[str]) -> None:
        if "steady" in workloads:
            sizes = [int(x) for x in self.args.steady_n.split(",")]
            if self.args.n:
                sizes = [self.args.n]
            for n in [20] if self.args.smoke and not self.args.n else sizes:
                self.scheduler_workload("steady", n, peers_too=n <= self.args.peers_max_n)
        if "burst" in workloads:
            self.scheduler_workload("burst", self.size(10_000, 20))
        if "ceiling" in workloads and "pika" in self.systems:
            for mode in pika_ceiling.MODES:
                self.ceiling(mode)
        self.beatd_only(workloads)

    def ceiling(self, mode: str) -> Result:
        """Raw pika's publish ceiling in `mode`: this run's, measured now if not yet."""
        n = self.size(10_000, 200)
        named = (f"pika-{mode}", f"ceiling-{n}")
        if not any((r.system, r.workload) == named for r in self.results):
            self.record(*named, lambda: pika_ceiling.measure(mode, n, self.settings))
        return next(r for r in self.results if (r.system, r.workload) == named)

    def beatd_only(self, workloads: list[str]) -> None:
        """The workloads no peer has."""
        s = self.settings
        if "startup" in workloads:
            n = self.size(100_000, 200)
            self.beatd_workload(f"startup-{n}", lambda: beatd_runner.startup(n, s))
        if "toml" in workloads:
            n = self.size(10_000, 200)
            self.beatd_workload(f"toml-load-{n}", lambda: beatd_runner.toml_load(n, s))
        if "catch-up" in workloads:
            for count, down in [(3, 30)] if self.args.smoke else [(10, 3600), (36, 1001)]:
                self.beatd_workload(
                    f"catch-up-{count}x{down}s",
                    lambda c=count, d=down: beatd_runner.catch_up(c, d, s),
                )
        if "million" in workloads:
            self.million()
        rounds, lease = (2, 2) if self.args.smoke else (self.args.rounds, self.args.lease)
        if "failover" in workloads:
            self.beatd_workload(
                f"failover-lease{lease}s", lambda: beatd_runner.failover(rounds, lease, s)
            )
        if "partitioned" in workloads:
            self.partitioned()
        if "partitioned-failover" in workloads:
            fleet = self.fleet()
            self.beatd_workload(
                f"partitioned-failover-{fleet[0]}x{fleet[1]}-lease{lease}s",
                lambda: beatd_partitioned.failover(rounds, lease, *fleet, s),
            )

    def fleet(self) -> tuple[int, int]:
        """(instances, partitions) of the partitioned workloads; smoke: 2 x 4."""
        return (2, 4) if self.args.smoke else (self.args.instances, self.args.partitions)

    def partitioned(self) -> None:
        """`steady` by one leader (P = 1), then by a fleet sharing P, against this run's floor.

        Warm-up is at least PARTITIONED_WARMUP at full size: 100,000 schedules
        start with a backlog (each instance loads the file first, then a fleet
        hands partitions over), and 15 s left it in the window: one leader's
        p99 was 4.2-12.2 s in three runs with 15 s and 1.5 s with 60.
        """
        n = self.size(100_000, 20)
        s = self.settings
        if not self.args.smoke:
            s = dataclasses.replace(s, warmup=max(s.warmup, PARTITIONED_WARMUP))
        runs = []
        for instances, count in [(1, 1), self.fleet()]:
            named = f"partitioned-{n}-{instances}x{count}"
            system = beatd_runner.Beatd(instances, count)
            self.beatd_workload(named, lambda b=system, w=named: measure.steady(b, n, s, w))
            runs.append(next((r for r in self.results if r.workload == named), None))
        ceiling = self.ceiling("batched").metrics.get("publisher_per_s")
        plan = measure.steady_intervals(n, s)
        beatd_partitioned.compare(runs[0], runs[1], ceiling, plan)

    def million(self) -> None:
        """N stored beside the few that make the same due fires, the reference first."""
        big, small = (int(x) for x in self.args.million_n.split(","))
        if self.args.smoke:
            big, small = 2000, 200
        mix = beatd_million.mix_for(big, small, self.args.smoke)
        s = self.settings
        named = f"million-ref-{small}"
        self.beatd_workload(named, lambda: beatd_million.reference(mix, s))
        ref = next((r for r in self.results if r.workload == named and not r.skipped), None)
        self.beatd_workload(f"million-{big}", lambda: beatd_million.stored(mix, s, ref))


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds: every process and database is cleaned up


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = _parser().parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS)) + sorted(
        set(args.systems.split(",")) - set(SYSTEMS) - {""}
    )
    if unknown:
        print(f"bench/run.py: unknown workload or system: {', '.join(unknown)}", file=sys.stderr)
        return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    # Bytecode for every system's sources, as an installed wheel has: with an
    # editable install and PYTHONDONTWRITEBYTECODE (set on this machine) each
    # launch would compile beatd's modules again (~0.1-0.2 s of its startup).
    for package in ("beatd", "bench"):
        compileall.compile_dir(procs.ROOT / package, quiet=1)
    with tempfile.TemporaryDirectory(prefix="beatd-bench-") as workdir:
        suite = Suite(args, Path(workdir))
        suite.run(workloads)
    results = list(suite.results)
    for path in args.include:
        results += [Result(**r) for r in json.loads(path.read_text())["results"]]
    print()
    print(table(results))
    for r in results:
        if isinstance(r.metrics.get("profile"), dict):
            print(f"\nWhere {r.system} spent its {r.workload} window (share of samples):")
            for frame, share in r.metrics["profile"]["inclusive"]:
                print(f"  {share:6.1%}  {frame}")
    verdicts = targets.check(results)
    if verdicts:
        print("\nTargets (issues 6 and 15):")
        print("\n".join(f"  {line}" for line in verdicts))
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(args.json, results, options, verdicts)
    print(f"\nwrote {args.json}")
    failed = [r for r in suite.results if r.skipped and r.skipped.startswith("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
