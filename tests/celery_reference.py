"""What Celery itself makes of a task, for tests that hold beatd's messages against it.

Runs on Celery's own venv (tests/celery_env.py), through the conftest fixture
`celery_reference`. Reads one JSON request on stdin, writes one JSON answer:

    {"task_v2": {"id", "name", "args", "kwargs", "expires" (ISO or null), "origin"}}
        -> {"task_v2": {"headers", "body", "properties"}}  as Celery's as_task_v2 builds them
    {"loads": "<a message body>"}
        -> {"loads": the body as a worker decodes it}, datetimes and dates tagged
           {"datetime": ISO} and {"date": ISO} so their types survive the trip
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import Any

from celery import Celery
from kombu.utils.json import loads


def _tagged(value: object) -> dict[str, str]:
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    raise TypeError(f"cannot answer with a {type(value).__name__}")


def main() -> None:
    request = json.load(sys.stdin)
    answer: dict[str, Any] = {}
    if "task_v2" in request:
        task = request["task_v2"]
        expires = task.get("expires")
        message = Celery("reference", set_as_current=False).amqp.as_task_v2(
            task["id"],
            task["name"],
            args=tuple(task["args"]),  # as beatd holds them: argsrepr is "()" for none
            kwargs=task["kwargs"],
            expires=datetime.fromisoformat(expires) if expires else None,
            origin=task["origin"],
        )
        answer["task_v2"] = {
            "headers": message.headers,
            "body": message.body,
            "properties": message.properties,
        }
    if "loads" in request:
        answer["loads"] = loads(request["loads"])
    json.dump(answer, sys.stdout, default=_tagged)


if __name__ == "__main__":
    main()
