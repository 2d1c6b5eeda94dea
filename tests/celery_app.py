"""A Celery 5 app for tests/test_celery_e2e.py, run by a real worker subprocess.

Its one task appends what it received (task id, args, kwargs, beatd's
scheduled-for header) as a JSON line to the file named by $BEATD_E2E_OUT.
No result backend: beatd never reads results.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery

app = Celery(
    "beatd_e2e",
    broker=os.environ.get("BEATD_E2E_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
)
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@app.task(name="beatd_e2e.record", bind=True)
def record(self: Any, *args: Any, **kwargs: Any) -> None:
    line = {
        "id": self.request.id,
        "args": list(args),
        "kwargs": kwargs,
        "scheduled_for": getattr(self.request, "beatd-scheduled-for", None),
    }
    with open(os.environ["BEATD_E2E_OUT"], "a", encoding="utf-8") as out:
        out.write(json.dumps(line, default=str) + "\n")
