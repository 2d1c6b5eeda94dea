"""The `beatd` command: parses arguments, runs one command, maps errors to exit codes.

Each command group lives in its own module exposing `register(subparsers)`;
a command's handler takes the parsed arguments and returns an exit code. A
BeatdError becomes one line per problem on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, Protocol

from beatd.config import environment
from beatd.errors import BeatdError, ConfigError
from beatd.redact import redact

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_USAGE, "bad usage or invalid config"),
    (EXIT_FAILURE, "anything else (database or broker down, no such schedule...)"),
)

GROUPS = (
    "config_cmds",
    "schedule_cmds",
    "backfill_cmds",
    "db_cmds",
    "daemon_cmds",
    "import_cmds",
    "web_cmds",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("beatd").strip()  # main() adds the "beatd: " prefix
        raise ConfigError(f"{where}: {message}" if where else message)


CONFIG_HELP = "config file (default ./beatd.toml, then $BEATD_CONFIG; one of them must exist)"


def _epilog() -> str:
    """The environment variables and exit codes, at the foot of every --help."""
    width = max(len(name) for name, _ in environment())
    lines = ["environment:"]
    lines += [f"  {name:<{width}}  {what}" for name, what in environment()]
    lines.append("exit codes:")
    lines += [f"  {code}  {what}" for code, what in EXIT_CODES]
    return "\n".join(lines)


class _Formatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog on its own; a `  NAME  text` line's
    continuation lines are indented to its text."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            column = re.match(r"\s+\S+\s\s+", line)
            lead = indent + line[: len(line) - len(line.lstrip())]
            more = indent + " " * column.end() if column else lead
            lines.append(
                textwrap.fill(line.strip(), width, initial_indent=lead, subsequent_indent=more)
            )
        return "\n".join(lines)


def _common() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=CONFIG_HELP)
    return common


def add_command(
    sub: argparse._SubParsersAction[_Parser],
    name: str,
    help: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """Register one command; every command takes --config, before or after its name."""
    parser = sub.add_parser(
        name,
        help=help,
        description=help,
        parents=[_common()],
        epilog=_epilog(),
        formatter_class=_Formatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("beatd")
    except PackageNotFoundError:  # a source checkout that is not installed
        return "unknown"


class _Version(argparse.Action):
    """--version: looks the version up only when asked (importlib.metadata costs ~0.1 s)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print beatd's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"beatd {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="beatd",
        description="A cron-like scheduling daemon for RabbitMQ.",
        epilog=_epilog(),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--config", metavar="PATH", default=None, help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for group in GROUPS:
        try:
            module = importlib.import_module(f"beatd.cli.{group}")
        except ModuleNotFoundError as exc:
            if exc.name != f"beatd.cli.{group}":
                raise
            continue
        module.register(sub)
    return parser


def warn(line: str) -> None:
    """One warning line on stderr: valid input that is most likely not what was meant."""
    print(f"beatd: warning: {one_line(line)}", file=sys.stderr)


def one_line(text: str) -> str:
    """The message with control characters (a newline in an argument) escaped, and any
    password of a URL in it masked (see beatd.redact)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in redact(text))


class Controlled(Protocol):
    def request_stop(self) -> None: ...
    def request_reload(self) -> None: ...


class Signals:
    """SIGTERM, SIGINT and SIGHUP for `beatd run`, caught from its first instant.

    main() installs them before anything slow (importing the database and broker
    libraries, reading the file, opening the database), so a stop during the start
    exits 0, not 143; a stop or reload asked for before there is a daemon is kept
    and passed on when one is attached.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._reload = False
        self._daemon: Controlled | None = None

    def attach(self, daemon: Controlled) -> None:
        self._daemon = daemon
        if self.stop.is_set():
            daemon.request_stop()
        if self._reload:
            daemon.request_reload()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()
        if self._daemon is not None:
            self._daemon.request_stop()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        if self._daemon is not None:
            self._daemon.request_reload()
        else:
            self._reload = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[Signals]:
        """The handlers, for the duration of the block (the previous ones come back)."""
        handlers = {signal.SIGTERM: self._on_stop, signal.SIGINT: self._on_stop}
        handlers[signal.SIGHUP] = self._on_reload
        previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _command(argv: Sequence[str]) -> str | None:
    """The command named in `argv` (the first word that is not an option or its value)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with contextlib.ExitStack() as stack:
        signals: Signals | None = None
        if _command(argv) == "run" and threading.current_thread() is threading.main_thread():
            signals = stack.enter_context(Signals().installed())
        return _main(argv, signals)


def _main(argv: Sequence[str], signals: Signals | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.signals = signals
        code: int = args.handler(args)
        return code
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"beatd: {one_line(problem)}", file=sys.stderr)
        return EXIT_USAGE
    except BeatdError as exc:
        print(f"beatd: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
