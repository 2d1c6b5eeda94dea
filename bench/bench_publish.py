"""Publishes per second: raw pika one-by-one, raw pika batched, beatd's AmqpPublisher, no confirms.

    .venv/bin/python bench/bench_publish.py [--url URL] [--messages N] [--batch N] [--runs N]

The same N prebuilt beatd messages (Celery format, persistent, mandatory) go
to a fresh queue, side by side in one run, each variant `--runs` times,
interleaved, the queue purged between runs; medians are printed:

- ``pika one-by-one``: BlockingConnection with confirm_delivery(): every
  basic_publish waits for its own confirm.
- ``pika batched confirms``: the ceiling for confirmed publishing: one
  SelectConnection on this thread writes all N, then counts the acks
  (``multiple=True`` covers ranges) until the last tag is confirmed.
- ``beatd AmqpPublisher``: publish() in batches of `--batch`, confirms
  settled as they arrive (what the relay does).
- ``pika no confirms``: BlockingConnection without confirms; the ceiling,
  with no delivery guarantee at all.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import pika.frame
import pika.spec

from beatd.model import Every, Message, Schedule
from beatd.publish.amqp import AmqpPublisher
from beatd.publish.amqp_wire import properties
from beatd.publish.base import Status
from beatd.publish.messages import build_message

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def messages(queue: str, count: int) -> list[Message]:
    schedule = Schedule(
        name="bench",
        spec=Every(timedelta(seconds=1)),
        task="bench.tasks.noop",
        queue=queue,
        args=(1, "two"),
        kwargs={"nested": {"k": [1, 2, 3]}},
    )
    return [build_message(schedule, NOW + timedelta(seconds=i), NOW) for i in range(count)]


def _raw_properties(message: Message) -> pika.BasicProperties:
    """The properties beatd sends, so raw pika publishes the very same messages."""
    return properties(message, NOW, None)


def raw_pika(url: str, batch: Sequence[Message], *, confirms: bool) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        if confirms:
            channel.confirm_delivery()
        started = time.perf_counter()
        for message in batch:
            channel.basic_publish(
                message.exchange,
                message.routing_key,
                message.body,
                _raw_properties(message),
                mandatory=True,
            )
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return elapsed


def raw_pika_batched(url: str, batch: Sequence[Message]) -> float:
    state = {"acked": 0, "started": 0.0, "elapsed": 0.0}

    def on_ack(frame: pika.frame.Method) -> None:
        method = frame.method
        assert isinstance(method, pika.spec.Basic.Ack), "nacked"
        state["acked"] = method.delivery_tag if method.multiple else state["acked"] + 1
        if state["acked"] >= len(batch):
            state["elapsed"] = time.perf_counter() - state["started"]
            conn.close()

    def on_channel(channel: Any) -> None:
        def publish_all(_frame: object) -> None:
            state["started"] = time.perf_counter()
            for message in batch:
                channel.basic_publish(
                    message.exchange,
                    message.routing_key,
                    message.body,
                    _raw_properties(message),
                    mandatory=True,
                )

        channel.confirm_delivery(on_ack, callback=publish_all)

    conn = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_close_callback=lambda c, _exc: c.ioloop.stop(),
    )
    conn.ioloop.start()
    conn.ioloop.close()
    assert state["elapsed"] > 0, "the batched run did not finish"
    return state["elapsed"]


def ours(url: str, batch: Sequence[Message], size: int) -> float:
    publisher = AmqpPublisher(url, name="beatd-bench")
    try:
        publisher.publish(batch[:1], NOW)  # connect and declare outside the timing
        started = time.perf_counter()
        for start in range(1, len(batch), size):
            results = publisher.publish(batch[start : start + size], NOW)
            assert all(r.status is Status.CONFIRMED for r in results), results[:3]
        elapsed = time.perf_counter() - started
    finally:
        publisher.close()
    return elapsed * len(batch) / (len(batch) - 1)  # the warm-up message was not timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="AmqpPublisher batch size")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    queue = f"beatd-bench-{uuid.uuid4().hex[:12]}"
    batch = messages(queue, args.messages)
    admin = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = admin.channel()
    channel.queue_declare(queue, durable=True)
    variants: dict[str, Callable[[], float]] = {
        "pika one-by-one": lambda: raw_pika(args.url, batch, confirms=True),
        "pika batched confirms": lambda: raw_pika_batched(args.url, batch),
        f"beatd AmqpPublisher (batch {args.batch})": lambda: ours(args.url, batch, args.batch),
        "pika no confirms": lambda: raw_pika(args.url, batch, confirms=False),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(args.runs):
            for name, run in variants.items():
                rates[name].append(args.messages / run())
                channel.queue_purge(queue)
    finally:
        channel.queue_delete(queue)
        admin.close()

    medians = {name: statistics.median(values) for name, values in rates.items()}
    one_by_one, batched, ours_name, unconfirmed = list(medians)
    print(f"{args.messages} messages, median of {args.runs} runs, persistent, mandatory")
    for name, median in medians.items():
        spread = ", ".join(f"{v:,.0f}" for v in rates[name])
        print(f"  {name:<36} {median:>9,.0f} msgs/s   ({spread})")
    print(
        f"  beatd / one-by-one: {medians[ours_name] / medians[one_by_one]:.1f}x   "
        f"beatd / batched: {medians[ours_name] / medians[batched]:.2f}   "
        f"beatd / no confirms: {medians[ours_name] / medians[unconfirmed]:.2f}\n"
        f"  "
        f"target >= 5,000/s: {'ok' if medians[ours_name] >= 5000 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
