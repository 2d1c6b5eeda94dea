"""The books model (tests/store/test_store_model.py) on the memory store, for as long as you like.

.venv/bin/python -m pytest fuzz/fuzz_books.py            # FUZZ_EXAMPLES examples
.venv/bin/python fuzz/fuzz_books.py --seconds 600         # a timed run
BEATD_MODEL_EXAMPLES=500 .venv/bin/pytest tests/store/test_store_model.py   # all stores
"""

from __future__ import annotations

import sys
from pathlib import Path

from fuzz_support import EXAMPLES, run_for
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "store"))

from test_store_model import BooksModel

from beatd.store.memory import MemoryStore


def test_books_on_the_memory_store() -> None:
    run_state_machine_as_test(
        lambda: BooksModel(MemoryStore),
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=60,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


if __name__ == "__main__":
    run_for([test_books_on_the_memory_store])
