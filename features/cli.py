"""Subcommands contributed by the `features` package to the ``streamscore`` CLI.

``streamscore features generate|apply|materialize``: synthetic offline data and training
sets, ``feast apply`` and materialization into Redis, all through the Feast SDK.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["register"]

PIPELINES = ("fraud", "pricing")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this package's commands to the top-level parser."""
    features = sub.add_parser(
        "features",
        help="generate synthetic feature data, apply Feast repos, materialize into Redis",
        description="Feature side of streamscore: synthetic offline data and training sets, "
        "'feast apply' and materialization of the pipeline's Feast repo (Redis online store).",
    )
    actions = features.add_subparsers(
        dest="features_action", metavar="ACTION", parser_class=type(features)
    )
    actions.required = True

    gen = actions.add_parser(
        "generate",
        help="write synthetic offline parquet, events and a labelled training set",
        description="Write realistic synthetic data for a pipeline into "
        "$STREAMSCORE_HOME/data/<pipeline>/ (default ./.streamscore): one parquet file per "
        "feature view, events.parquet (raw input events of the last 24 h) and "
        "training.parquet + training.json (events joined with features as of event time, "
        "request-time features, and a label that depends on them).",
    )
    gen.add_argument("--pipeline", required=True, choices=PIPELINES)
    gen.add_argument("--out", type=Path, default=None,
                     help="output dir (default $STREAMSCORE_HOME/data/<pipeline>)")
    gen.add_argument("--cards", type=_positive, default=100_000, help="fraud: cards (100000)")
    gen.add_argument("--merchants", type=_positive, default=5_000,
                     help="fraud: merchants (5000)")
    gen.add_argument("--skus", type=_positive, default=20_000, help="pricing: SKUs (20000)")
    gen.add_argument("--stores", type=_positive, default=200, help="pricing: stores (200)")
    gen.add_argument("--rows", type=_positive, default=None,
                     help="training events (default: 2 x cards for fraud, 10 x SKUs for pricing)")
    gen.add_argument("--fraud-rate", type=float, default=0.02,
                     help="fraud: target share of fraudulent events (0.02)")
    gen.add_argument("--seed", type=int, default=7, help="random seed (7)")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    gen.set_defaults(func=_generate)

    for name, helptext, desc in (
        ("apply", "register the pipeline's Feast objects ('feast apply' via the SDK)",
         "Register the entities, sources and feature views of the pipeline's Feast repo in "
         "its registry and set up the Redis online store, through FeatureStore.apply."),
        ("materialize", "load offline feature data into the Redis online store",
         "Materialize offline rows in [start, end) into Redis through "
         "FeatureStore.materialize, view by view in bounded time chunks, with a progress "
         "bar; reports rows/s and peak memory. Default window: oldest offline row to now."),
    ):  # fmt: skip
        p = actions.add_parser(name, help=helptext, description=desc)
        p.add_argument("--pipeline", choices=PIPELINES, default=None,
                       help="pipeline whose shipped repo to use (or give --repo)")
        p.add_argument("--repo", type=Path, default=None,
                       help="Feast repo dir (default: the shipped repo of --pipeline)")
        p.add_argument("--redis-url", default=None,
                       help="Redis URL overriding the repo's connection string "
                       "(default: $STREAMSCORE_FEAST_REDIS, else $REDIS_URL, else 127.0.0.1:6379)")
        if name == "materialize":
            p.add_argument("--start", type=_when, default=None,
                           help="window start, ISO 8601 (UTC if no zone)")
            p.add_argument("--end", type=_when, default=None, help="window end (default now)")
            p.add_argument("--days", type=float, default=None,
                           help="window = the last DAYS days (instead of --start)")
            p.add_argument("--views", nargs="+", default=None, help="only these feature views")
            p.add_argument("--chunk-rows", type=_positive, default=50_000,
                           help="max offline rows per materialize call (bounds memory; 50000)")
            p.add_argument("--apply", action="store_true", help="apply the repo first")
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
            p.set_defaults(func=_materialize)
        else:
            p.set_defaults(func=_apply)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _repo(args: argparse.Namespace) -> Path:
    from features.exceptions import FeatureRepoError
    from features.repo import repo_path

    if args.repo is not None:
        return Path(args.repo)
    if args.pipeline is None:
        raise FeatureRepoError("give --pipeline fraud|pricing or --repo DIR")
    return repo_path(args.pipeline)


def _generate(args: argparse.Namespace) -> int:
    from features.synthetic import generate

    result = generate(
        args.pipeline, args.out, rows=args.rows, seed=args.seed, cards=args.cards,
        merchants=args.merchants, skus=args.skus, stores=args.stores,
        fraud_rate=args.fraud_rate, progress=not args.no_progress,
    )  # fmt: skip
    for name, path in result.files.items():
        rows = result.rows.get(name)
        print(f"  {path}" + (f"  ({rows:,} rows)" if rows is not None else ""))
    label = "fraud rate" if args.pipeline == "fraud" else "mean units"
    print(
        f"generated {args.pipeline} data in {result.seconds:.1f} s "
        f"({label} {result.label_mean:.4g})"
    )
    return 0


def _apply(args: argparse.Namespace) -> int:
    from features.materialize import apply_repo

    result = apply_repo(_repo(args), args.redis_url)
    print(
        f"applied project {result.project}: entities {', '.join(result.entities)}; "
        f"feature views {', '.join(result.feature_views)} ({result.seconds:.1f} s)"
    )
    return 0


def _materialize(args: argparse.Namespace) -> int:
    from features.materialize import apply_repo, materialize_repo

    repo = _repo(args)
    if args.apply:
        apply_repo(repo, args.redis_url)
    result = materialize_repo(
        repo, start=args.start, end=args.end, days=args.days, views=args.views,
        chunk_rows=args.chunk_rows, redis_url=args.redis_url, progress=not args.no_progress,
    )  # fmt: skip
    for view in result.views:
        print(
            f"  {view.name:<20} {view.rows:>10,} rows in {view.chunks} chunk(s), "
            f"{view.seconds:6.1f} s, {view.rows_per_s:>9,.0f} rows/s"
        )
    print(
        f"materialized {result.rows:,} rows of project {result.project} "
        f"[{result.start:%Y-%m-%d %H:%M:%S} .. {result.end:%Y-%m-%d %H:%M:%S} UTC) in "
        f"{result.seconds:.1f} s: {result.rows_per_s:,.0f} rows/s, peak RSS "
        f"{result.peak_rss_mib:,.0f} MiB"
    )
    return 0
