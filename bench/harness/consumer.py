"""The one consumer that measures every system the same way.

Run as a separate process (`python -m bench.harness.consumer`), it consumes
the run's queues with auto-ack and writes one line per message, flushed every
100 ms: arrival (time.time() on receipt), the scheduled instant from the
`beatd-scheduled-for` header (as sent), the message id (AMQP message_id, else
Celery's `id` header), and the queue. Lag = arrival - scheduled instant, for
beatd and for every peer alike; parsing is left to the harness so that the
consumer does as little as possible per message.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

HEADER = "beatd-scheduled-for"
FLUSH_EVERY = 0.1


@dataclass(frozen=True, slots=True)
class Record:
    arrival: float  # epoch seconds
    scheduled: float | None  # epoch seconds, from the header
    message_id: str
    queue: str

    @property
    def lag(self) -> float | None:
        return None if self.scheduled is None else self.arrival - self.scheduled


def parse_instant(text: str) -> float | None:
    if text in ("", "-"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class Consumer:
    """Starts the consumer process, tails its output, stops it."""

    def __init__(self, amqp_url: str, queues: list[str], workdir: Path, max_seconds: float):
        self.amqp_url = amqp_url
        self.queues = queues
        self.out = workdir / f"consumer-{queues[0]}.tsv"
        self.ready = workdir / f"consumer-{queues[0]}.ready"
        self.log = workdir / f"consumer-{queues[0]}.log"
        self.max_seconds = max_seconds
        self.records: list[Record] = []
        self._offset = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self.died: str | None = None  # set when it stopped on its own (the broker went away)
        self._stopped = False

    def start(self, timeout: float = 15.0) -> None:
        self.out.touch()
        argv = [sys.executable, "-m", "bench.harness.consumer", "--url", self.amqp_url]
        argv += ["--out", str(self.out), "--ready", str(self.ready)]
        argv += ["--max-seconds", str(self.max_seconds), *self.queues]
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=_root())
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"consumer did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def poll(self) -> list[Record]:
        """Read the records written since the last poll; returns them (also kept in .records)."""
        with self.out.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        fresh = []
        for line in chunk[:end].decode().splitlines():
            arrival, scheduled, message_id, queue = line.split("\t")
            fresh.append(Record(float(arrival), parse_instant(scheduled), message_id, queue))
        self.records.extend(fresh)
        return fresh

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is not None and not self._stopped:
            self.died = self.log.read_text(errors="replace")[-500:] or "exited"
        self._stopped = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self.poll()

    def __enter__(self) -> Consumer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    import pika

    parser = argparse.ArgumentParser(prog="bench.harness.consumer")
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("queues", nargs="+")
    args = parser.parse_args(argv)

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    buffer: list[str] = []
    queues: dict[str, str] = {}
    now = time.time

    def on_message(channel: object, method: object, props: object, body: bytes) -> None:
        headers = props.headers or {}  # type: ignore[attr-defined]
        message_id = props.message_id or headers.get("id")  # type: ignore[attr-defined]
        buffer.append(
            f"{now():.6f}\t{_text(headers.get(HEADER))}\t{_text(message_id)}"
            f"\t{queues[method.consumer_tag]}\n"  # type: ignore[attr-defined]
        )

    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = conn.channel()
    for queue in args.queues:
        channel.queue_declare(queue, durable=True)
        queues[channel.basic_consume(queue, on_message, auto_ack=True)] = queue
    Path(args.ready).touch()
    deadline = time.monotonic() + args.max_seconds
    with open(args.out, "a") as out:
        while not stopping and time.monotonic() < deadline:
            conn.process_data_events(time_limit=FLUSH_EVERY)
            if buffer:
                out.write("".join(buffer))
                out.flush()
                buffer.clear()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
