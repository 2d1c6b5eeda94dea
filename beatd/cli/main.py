"""The `beatd` command: parses arguments, runs one command, maps errors to exit codes.

Each command group lives in its own module exposing `register(subparsers)`;
a command's handler takes the parsed arguments and returns an exit code. A
BeatdError becomes one line per problem on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from beatd.errors import BeatdError, ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

GROUPS = (
    "config_cmds",
    "schedule_cmds",
    "db_cmds",
    "daemon_cmds",
    "import_cmds",
    "web_cmds",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("beatd").strip()  # main() adds the "beatd: " prefix
        raise ConfigError(f"{where}: {message}" if where else message)


def _common() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default ./beatd.toml, then $BEATD_CONFIG)",
    )
    return common


def add_command(
    sub: argparse._SubParsersAction[_Parser],
    name: str,
    help: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """Register one command; every command takes --config, before or after its name."""
    parser = sub.add_parser(name, help=help, description=help, parents=[_common()])
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="beatd", description="A cron-like scheduling daemon for RabbitMQ.")
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="config file (default ./beatd.toml, then $BEATD_CONFIG)",
    )
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


def one_line(text: str) -> str:
    """The message with control characters (a newline in an argument) escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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
