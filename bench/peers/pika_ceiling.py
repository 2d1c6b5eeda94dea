"""The raw publish ceiling: how fast plain pika gets n persistent messages through RabbitMQ.

Three modes, each a separate process (`python -m bench.peers.pika_ceiling`):
`one-by-one` (BlockingConnection with confirms: each publish waits for its
ack), `batched` (SelectConnection with a sliding window of unconfirmed
messages) and `no-confirms` (BlockingConnection, fire and forget). Every
message carries the instant the run started as `beatd-scheduled-for`, so
the consumer measures it like a burst: that instant to the last arrival.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from bench.harness import procs
from bench.harness.measure import Count, Settings, environment, lag_metrics, wait_for
from bench.harness.report import Result
from bench.harness.workloads import iso

HEADER = "beatd-scheduled-for"
MODES = ("one-by-one", "batched", "no-confirms")
WINDOW = 1000


def measure(mode: str, n: int, settings: Settings) -> Result:
    result = Result(f"pika-{mode}", f"ceiling-{n}")
    with environment(settings) as (_db, queue, _probe, scratch, consumer):
        log = scratch / "pika.log"
        out = scratch / "pika.json"
        argv = [procs.python(), "-m", "bench.peers.pika_ceiling", "--url", settings.amqp_url]
        argv += ["--queue", queue, "--mode", mode, "--count", str(n), "--out", str(out)]
        proc = procs.start(argv, log)
        try:
            proc.wait(settings.burst_timeout + 30)
        finally:
            procs.stop(proc)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"pika ceiling {mode} failed:\n{procs.tail(log)}")
        own = json.loads(out.read_text())

        wait_for(consumer, Count(lambda r: r.queue == queue, n), 30)
    fires = [r for r in consumer.records if r.queue == queue]
    result.metrics.update(lag_metrics(fires))
    last = max((r.arrival for r in fires), default=None)
    seconds = None if last is None else last - own["started"]
    result.metrics.update(
        {
            "n": n,
            "seconds": seconds,
            "fires_per_s": len(fires) / seconds if seconds else None,
            "publisher_per_s": own["confirmed"] / own["seconds"] if own["seconds"] else None,
            "cpu_s_per_min": own["cpu"] / (own["seconds"] / 60) if own["seconds"] else None,
            "peak_rss_mb": own["rss_mb"],
        }
    )
    result.notes.append(f"{len(fires)}/{n} arrived; {own['confirmed']} confirmed")
    return result


def _props(pika: Any, stamp: str, i: int) -> Any:
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id=f"ceiling-{i}",
        headers={HEADER: stamp},
    )


BODY = b'[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


def _blocking(pika: Any, url: str, queue: str, count: int, confirm: bool, stamp: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    if confirm:
        channel.confirm_delivery()
    for i in range(count):
        channel.basic_publish("", queue, BODY, _props(pika, stamp, i))
    conn.close()
    return count


def _batched(pika: Any, url: str, queue: str, count: int, stamp: str, limit: float) -> int:
    """A sliding window of WINDOW unconfirmed messages on an asynchronous connection."""
    state = {"sent": 0, "confirmed": 0}
    unconfirmed: set[int] = set()
    holder: dict[str, Any] = {}

    def top_up() -> None:
        channel = holder["channel"]
        while state["sent"] < count and len(unconfirmed) < WINDOW:
            channel.basic_publish("", queue, BODY, _props(pika, stamp, state["sent"]))
            state["sent"] += 1
            unconfirmed.add(state["sent"])  # delivery tags count from 1

    def on_confirm(frame: Any) -> None:
        tag, multiple = frame.method.delivery_tag, frame.method.multiple
        done = [t for t in unconfirmed if t <= tag] if multiple else [tag]
        unconfirmed.difference_update(done)
        if isinstance(frame.method, pika.spec.Basic.Ack):
            state["confirmed"] += len(done)
        if state["sent"] >= count and not unconfirmed:
            holder["conn"].close()
        else:
            top_up()

    def on_channel(channel: Any) -> None:
        holder["channel"] = channel
        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _f: top_up())

    conn = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda c, e: c.ioloop.stop(),
        on_close_callback=lambda c, e: c.ioloop.stop(),
    )
    holder["conn"] = conn
    conn.ioloop.call_later(limit, conn.close)
    conn.ioloop.start()
    return state["confirmed"]


def main(argv: list[str] | None = None) -> int:
    import pika

    parser = argparse.ArgumentParser(prog="bench.peers.pika_ceiling")
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--limit", type=float, default=300.0)
    args = parser.parse_args(argv)

    started = time.time()
    cpu0 = time.process_time()
    stamp = iso(started)
    if args.mode == "batched":
        confirmed = _batched(pika, args.url, args.queue, args.count, stamp, args.limit)
    else:
        confirm = args.mode == "one-by-one"
        confirmed = _blocking(pika, args.url, args.queue, args.count, confirm, stamp)
    seconds = time.time() - started
    figures = {
        "started": started,
        "seconds": seconds,
        "confirmed": confirmed,
        "cpu": time.process_time() - cpu0,
        "rss_mb": procs.peak_rss_mb(os.getpid()),
    }
    with open(args.out, "w") as out:
        json.dump(figures, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
