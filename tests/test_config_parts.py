"""A large file is parsed a batch of schedule tables at a time: same settings, same errors.

Each file is loaded with tiny batches (so every batch boundary is exercised)
and compared with parsing the whole document at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from beatd import config
from beatd.config import Settings, load_settings, read_toml, settings_from_document
from beatd.errors import ConfigError

HEAD = '[beatd]\ntimezone = "Europe/Berlin"\n\n'


def table(name: str, extra: str = "") -> str:
    return f'[schedules.{name}]\nevery = "1m"\ntask = "app.t"\n{extra}\n'


CASES = {
    "plain": HEAD + "".join(table(f"s{i}") for i in range(7)),
    "no head": "".join(table(f"s{i}") for i in range(5)),
    "quoted names and comments": HEAD
    + '[schedules."a b"] # one\nevery = "1m"\ntask = "t"\n'
    + '[schedules.\'c.d\']\nevery = "2m"\ntask = "t"\n'
    + table("e")
    + table("f"),
    "header inside a multi-line string": HEAD
    + table("a")
    + table("b", 'kwargs = { note = """\n[schedules.c]\nevery = "1s"\n""" }')
    + table("d")
    + table("e"),
    "array of arrays over lines": HEAD
    + table("a")
    + table("b", "args = [\n  [1, 2],\n]")
    + table("c"),
    "sub-table of the schedule above": HEAD
    + table("a")
    + "[schedules.a.kwargs]\nx = 1\n"
    + table("b")
    + table("c")
    + "[[schedules.c.headers.list]]\ny = 2\n",
    "sub-tables further down": HEAD
    + table("a")
    + "[schedules.a.kwargs]\nx = 1\n"
    + table("b")
    + table("c")
    + "[schedules.a.headers]\ny = 2\n",
    "[beatd] last": table("a") + table("b") + table("c") + HEAD,
    "crlf": (HEAD + table("a") + table("b") + table("c")).replace("\n", "\r\n"),
    "duplicate across batches": HEAD + table("a") + table("b") + table("c") + table("a"),
    "[schedules] twice": HEAD
    + table("a")
    + "[schedules]\n"
    + table("b")
    + table("c")
    + "[schedules]\n",
    "dotted schedules in the head": 'schedules.z = { every = "1m", task = "t" }\n'
    + table("a")
    + table("b")
    + table("c"),
    "inline schedules in the head": "schedules = {}\n" + table("a") + table("b") + table("c"),
    "bad values, then bad TOML": HEAD
    + table("a", "queue = 1")
    + table("b")
    + table("c")
    + "x = \n",
    "bad values in several batches": HEAD
    + table("a", "queue = 1")
    + table("b")
    + table("c", 'misfire = "never"')
    + table("d", 'jitter = "soon"'),
    "[bogus] last": HEAD + table("a", "queue = 1") + table("b") + table("c") + "[bogus]\n",
    "unknown tables in the head": "[beatd]\n[extra]\n[other]\n"
    + table("a")
    + table("b")
    + table("c"),
    "not UTF-8 late": HEAD + table("a") + table("b") + table("c", 'queue = "\udcff"'),
}


def outcome(load: object) -> Settings | tuple[str, ...]:
    try:
        settings = load() if callable(load) else None
    except ConfigError as exc:
        return exc.problems
    assert isinstance(settings, Settings)
    return settings


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_batched_parse_equals_the_whole_document(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "beatd.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    whole = outcome(lambda: settings_from_document(read_toml(path), {}, path=path))
    for batch in (1, 2, 3):
        monkeypatch.setattr(config, "_BATCH", batch)
        assert outcome(lambda: load_settings(path, env={})) == whole
