"""The ``streamscore`` command line: one parser, subcommands contributed by each package.

Each package that offers commands has a ``register(subparsers)`` function (in
``stream.cli.commands``, ``features.cli``, ``scorers.cli``, ``benchmarks.cli``...). A command
sets ``func`` to a handler ``(args) -> int``. Handlers import heavy libraries (Feast,
LightGBM, numba) lazily, so ``--help`` stays fast.

Contract: bad input exits non-zero with one clear line on stderr, never a traceback
(``--debug`` shows the traceback of an unexpected error).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from schemas.errors import StreamscoreError
from stream.logs import setup_logging

__all__ = ["build_parser", "main"]

log = logging.getLogger("streamscore.cli")

# Modules whose ``register(subparsers)`` adds commands, in the order --help lists them.
COMMAND_MODULES = (
    "stream.cli.commands",
    "stream.cli.run",
    "features.cli",
    "scorers.cli",
    "stream.cli.drift",
    "benchmarks.cli",
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every package's subcommands."""
    parser = _Parser(
        prog="streamscore",
        description="Real-time ML scoring of Kafka event streams.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument("--log-json", action="store_true", help="log as JSON lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamscore`` script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, json_lines=args.log_json)
    try:
        return int(args.func(args) or 0)
    except StreamscoreError as exc:
        print(f"streamscore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("streamscore: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, not a traceback, for anything unexpected
        if args.debug:
            raise
        print(
            f"streamscore: error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
