"""The one grammar every ``streamscore`` command follows, in one place.

- Errors: one line on stderr and exit 2 for a usage error (``Parser``).
- Global options (``--log-level``, ``--log-json``, ``--debug``) are accepted before or
  after any subcommand: ``add_global_options`` gives every parser of the tree a copy
  whose default is ``SUPPRESS``, so a flag given after the subcommand overrides the
  top-level one and an absent one leaves it alone.
- Subcommands are shown as ``COMMAND``; option values use the metavars of
  ``METAVARS`` (a pipeline is ``PIPELINE``, a model reference ``REF``, a count ``N``,
  a duration ``S`` or ``MS``, a file or folder ``PATH``, ...).
- ``--bootstrap-servers`` is the one spelling of the Kafka bootstrap override
  (``--bootstrap`` is kept as a hidden alias).
- Exit codes (``EXIT_CODES``) are listed in ``streamscore --help``.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterator
from typing import Any, NoReturn

__all__ = [
    "BOOTSTRAP_HELP",
    "COMMAND",
    "EXIT_CODES",
    "LOG_LEVELS",
    "METAVARS",
    "Parser",
    "add_bootstrap",
    "add_global_options",
    "epilog",
    "walk",
]

COMMAND = "COMMAND"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The metavars option values use; tests/stream/cli/test_grammar.py holds every command to
# them. Choices are shown as {a,b}; KEY=VALUE and A,B,... describe their own shape.
METAVARS = frozenset({
    "PIPELINE", "REF", "NAME", "ALIAS", "N", "S", "MS", "RATE", "FRACTION", "SCORE", "PATH",
    "URL", "HOST:PORT[,...]", "PORT", "ID", "TIME", "DAYS", "KEY=VALUE", "A,B,...", "LIST",
    "OBJECTIVE", "SEED", "LEVEL", "X", "TEXT",
})
EXIT_CODES = (
    (0, "success"),
    (1, "runtime or infrastructure error (broker or Redis unreachable, a model file that "
        "fails its sha256, a worker that failed; 'dev status': not everything runs)"),
    (2, "usage or configuration error (unknown option or choice, bad pipeline file, "
        "unknown pipeline name, missing environment variable)"),
    (130, "interrupted (Ctrl-C)"),
)


BOOTSTRAP_HELP = ("Kafka bootstrap servers, overriding the pipeline file's (default: the file, "
                  "else $KAFKA_BOOTSTRAP_SERVERS, else the broker of 'streamscore dev up')")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def epilog() -> str:
    """The exit-code table shown under ``streamscore --help``."""
    rows = "\n".join(textwrap.fill(text, 79, initial_indent=f"  {code:<4} ",
                                    subsequent_indent=" " * 7) for code, text in EXIT_CODES)
    return ("global options (--log-level, --log-json, --debug) may also follow any\n"
            f"subcommand.\n\nexit codes:\n{rows}")


def _level(text: str) -> str:
    value = text.upper()
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(LOG_LEVELS)})")
    return value


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The global options; on subcommands (``top=False``) absent ones set nothing."""
    default: Any = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("global options")
    group.add_argument("--log-level", type=_level, default=default, metavar="LEVEL",
                       help="DEBUG, INFO, WARNING, ERROR or CRITICAL "
                            "(default $STREAMSCORE_LOG_LEVEL, else INFO)")
    group.add_argument("--log-json", action="store_true", default=default,
                       help="log as JSON lines (default $STREAMSCORE_LOG_JSON)")
    group.add_argument("--debug", action="store_true",
                       default=False if top else argparse.SUPPRESS,
                       help="show the traceback of an unexpected internal error")


def walk(parser: argparse.ArgumentParser,
         path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the tree with its command path, the root first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def add_bootstrap(parser: argparse.ArgumentParser, help: str) -> None:
    """``--bootstrap-servers`` (and the hidden old spelling ``--bootstrap``)."""
    parser.add_argument("--bootstrap-servers", default="", metavar="HOST:PORT[,...]",
                        help=help)
    parser.add_argument("--bootstrap", dest="bootstrap_servers", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)

