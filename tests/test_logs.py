"""The log formats as users read them: one line per fire, also when one record carries many."""

from __future__ import annotations

import io
import json
import logging

import pytest

from beatd.logs import EACH, setup

pytestmark = pytest.mark.usefixtures("restore_logging")


def test_json_logs_are_one_object_per_line() -> None:
    stream = io.StringIO()
    setup("json", stream=stream)
    logging.getLogger("beatd.test").info("hello", extra={"epoch": 3})
    (entry,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entry["msg"] == "hello" and entry["level"] == "info" and entry["epoch"] == 3
    assert entry["ts"].endswith("Z")
    stream.truncate(0)
    setup("text", stream=stream)
    logging.getLogger("beatd.test").warning("careful", extra={"k": "v"})
    assert stream.getvalue().rstrip().endswith("WARNING careful k=v")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_record_of_many_fires_is_a_line_per_fire(fmt: str) -> None:
    """Each line stands alone: the record's message and fields, then that fire's own fields."""
    out = io.StringIO()
    drain = setup(fmt, stream=out, urls=["amqp://u:Pw4Secret@h//"], background=True)
    try:
        each = [{"fire_id": f"f{i}", "lag_ms": i / 10} for i in range(3)]
        each.append({"fire_id": "f3", "note": "amqp://u:Pw4Secret@h//"})
        logging.getLogger("beatd.relay").info(
            "fire published", extra={EACH: each, "partition": "2/4"}
        )
        logging.getLogger("beatd.relay").info("plain", extra={"k": 1})
    finally:
        drain()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5, lines
    assert "Pw4Secret" not in out.getvalue()
    if fmt == "json":
        parsed = [json.loads(line) for line in lines]
        assert [p["fire_id"] for p in parsed[:4]] == ["f0", "f1", "f2", "f3"]
        assert parsed[1]["lag_ms"] == 0.1 and parsed[1]["msg"] == "fire published"
        assert all(p["partition"] == "2/4" and EACH not in p for p in parsed[:4])
        assert parsed[4]["msg"] == "plain" and parsed[4]["k"] == 1
    else:
        assert all(" fire published partition=2/4 fire_id=f" in line for line in lines[:4])
        assert lines[1].endswith("fire_id=f1 lag_ms=0.1")
        assert lines[4].endswith("plain k=1")
