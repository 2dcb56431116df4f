"""The ``streamscore`` command line: one parser, subcommands contributed by each package.

Each package that offers commands has a ``register(subparsers)`` function: streamscore's
own (``stream.cli.commands``, ``stream.cli.run``, ``stream.cli.drift``) and those of the
earlier stages (``features.cli``, ``scorers.cli``) are imported here; anything built on
top of ``stream`` (the benchmarks, a user's own tools) plugs in through the
``streamscore.commands`` entry point group, each entry naming a ``register`` function::

    [project.entry-points."streamscore.commands"]
    bench = "benchmarks.cli:register"

A command sets ``func`` to a handler ``(args) -> int``. Handlers import heavy libraries
(Feast, LightGBM, numba) lazily, so ``--help`` stays fast.

Contract: bad input exits non-zero with one clear line on stderr, never a traceback
(``--debug`` shows the traceback of an unexpected error); the grammar every command
follows (global options anywhere, metavars, exit codes) is ``stream.cli.grammar``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

from features import cli as features_cli
from schemas.errors import StreamscoreError, missing_extra
from scorers import cli as scorers_cli
from stream.cli import check, commands, drift, model_compare, outcomes, run
from stream.cli.grammar import COMMAND, Parser, add_global_options, epilog, walk
from stream.logs import setup_logging

__all__ = ["build_parser", "main"]

log = logging.getLogger("streamscore.cli")

# ``register(subparsers)`` of every built-in command group, in the order --help lists them
# (plug-ins of the ``streamscore.commands`` entry point group follow).
REGISTER: tuple[Callable[[Any], None], ...] = (
    commands.register,
    run.register,
    features_cli.register,
    scorers_cli.register,
    drift.register,
    outcomes.register,
    model_compare.register,  # adds 'compare' under 'model': after scorers_cli
    check.register,
)
PLUGIN_GROUP = "streamscore.commands"


def _plugins() -> list[Callable[[Any], None]]:
    """The ``register`` functions of the installed plug-ins (a broken one is skipped)."""
    found = []
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except Exception as exc:  # one bad plug-in must not take the CLI down
            log.warning("command plug-in %s (%s) not loaded: %s", ep.name, ep.value, exc)
    return found


def _version() -> str:
    try:
        return version("streamscore")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every package's subcommands."""
    parser = Parser(
        prog="streamscore",
        description="Real-time ML scoring of Kafka event streams.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streamscore {_version()}")
    sub = parser.add_subparsers(dest="command", metavar=COMMAND, parser_class=Parser)
    sub.required = True
    for register in (*REGISTER, *_plugins()):
        register(sub)
    # Every parser of the tree, the root included, takes the global options.
    for path, each in list(walk(parser)):
        add_global_options(each, top=not path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamscore`` script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level, json_lines=args.log_json)
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
        extra = missing_extra(exc) if isinstance(exc, ModuleNotFoundError) else None
        if extra is not None:  # an optional extra (bench, faust) is not installed
            print(f"streamscore: error: {extra}", file=sys.stderr)
            return extra.exit_code
        print(
            f"streamscore: error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
