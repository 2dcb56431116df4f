"""The ``streamscore bench`` command: component and end-to-end benchmarks.

Each benchmark lives in its own module ``benchmarks.bench_<name>`` exposing
``add_arguments(parser)`` (cheap: no heavy imports) and ``run(args) -> int``.
``bench all`` runs every one in turn with its defaults (``--quick`` for short runs).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["BENCHMARKS", "register"]

# name -> one-line help; the module is benchmarks.bench_<name>.
BENCHMARKS = {
    "scorer": "compiled LightGBM vs LightGBM's own predict (and lleaves/treelite if importable)",
    "features": "fast online reader vs the Feast SDK and a bare pipelined HMGET",
    "drift": "cost of the drift update per scored batch, and alarm calibration",
    "core": "CPU per event of the Kafka-free batch core (decode, features, decide, encode)",
    "e2e": "end-to-end latency sweep of the worker vs the naive stack, with plots",
}


def _load(name: str) -> object | None:
    """The benchmark module, or None when it is not part of this checkout."""
    try:
        return importlib.import_module(f"benchmarks.bench_{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.bench_{name}":
            raise
        return None


def _run_all(args: argparse.Namespace) -> int:
    worst = 0
    for name in BENCHMARKS:
        module: Any = _load(name)
        if module is None:
            print(f"bench {name}: not available in this checkout, skipped")
            continue
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        sub_args = parser.parse_args(["--quick"] if args.quick else [])
        sub_args.out = args.out
        worst = max(worst, int(module.run(sub_args) or 0))
    return worst


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``bench`` and its subcommands."""
    bench = sub.add_parser(
        "bench",
        help="run benchmarks (scorer, features, e2e, all)",
        description="Benchmarks that report ratios against references measured in the same run.",
    )
    kinds = bench.add_subparsers(dest="bench", metavar="COMMAND", parser_class=type(bench))
    kinds.required = True
    for name, text in BENCHMARKS.items():
        module: Any = _load(name)
        if module is None:
            continue  # not part of this checkout: the command is simply absent
        p = kinds.add_parser(name, help=text, description=text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    p_all = kinds.add_parser("all", help="every benchmark in turn", description="Every benchmark.")
    p_all.add_argument("--quick", action="store_true", help="short runs (make bench)")
    p_all.add_argument("--out", default="benchmarks/out", metavar="PATH", help="report directory")
    p_all.set_defaults(func=_run_all)
