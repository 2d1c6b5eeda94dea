"""Schedules without args or kwargs (most of them) get the message Celery itself would build."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from publish_support import NOW, make_schedule

from beatd.publish.messages import build_message


def test_a_schedule_without_args_matches_what_celery_builds(
    celery_reference: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    schedule = make_schedule(task="app.tasks.bare", headers={"tenant": "acme", "retries": 9})
    message = build_message(schedule, NOW, NOW)
    task = {
        "id": message.fire_id,
        "name": schedule.task,
        "args": [],
        "kwargs": {},
        "origin": "beatd",
    }
    reference = celery_reference({"task_v2": task})["task_v2"]

    ours = {k: v for k, v in message.headers.items() if not k.startswith("beatd-")}
    assert json.loads(json.dumps(ours)) == {"tenant": "acme", **reference["headers"]}
    assert json.loads(message.body) == reference["body"]


def test_the_body_is_compact_json_like_any_other() -> None:
    bare = build_message(make_schedule(), NOW, NOW)
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    assert bare.body == json.dumps([[], {}, embed], separators=(",", ":")).encode()
    assert (bare.headers["argsrepr"], bare.headers["kwargsrepr"]) == (repr(()), repr({}))


def test_messages_of_one_schedule_share_no_mutable_header() -> None:
    schedule = make_schedule(expires=timedelta(minutes=1))
    first = build_message(schedule, NOW, NOW)
    second = build_message(schedule, NOW + timedelta(seconds=5), NOW)
    assert first.headers is not second.headers
    assert first.headers["timelimit"] is not second.headers["timelimit"]
    assert first.headers["stamps"] is not second.headers["stamps"]
    assert first.headers["id"] != second.headers["id"]
