"""``streamscore check --pipeline FILE``: validate a pipeline before running it.

Prints one line per problem (``stream.core.check``) and exits 1 on any; ``ok`` and 0
when the pipeline can run. Reads files only: no broker or Redis is needed.
"""

from __future__ import annotations

import argparse
from typing import Any

from features.pipelines import pipeline_arg

__all__ = ["register"]


def _check(args: argparse.Namespace) -> int:
    from stream.core.check import check_pipeline

    problems = check_pipeline(args.pipeline, registry_root=args.registry or None)
    for line in problems:
        print(line)
    if not problems:
        print(f"ok: {args.pipeline}")
    return 1 if problems else 0


def register(sub: Any) -> None:
    """Add ``check`` to the CLI."""
    p = sub.add_parser(
        "check", help="validate a pipeline: values, event, Feast repo, model, policy",
        description="Check a pipeline file against its event schema, Feast registry and "
                    "model; one line per problem, exit 1 on any.")
    p.add_argument("--pipeline", required=True, type=pipeline_arg, metavar="PIPELINE",
                   help="pipeline name (in pipelines/) or YAML file")
    p.add_argument("--registry", default="", metavar="PATH",
                   help="model registry (default: the file's model.registry, then "
                        "$STREAMSCORE_HOME/models)")
    p.set_defaults(func=_check)
