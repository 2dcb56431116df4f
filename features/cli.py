"""Subcommands contributed by the `features` package to the ``streamscore`` CLI.

``streamscore features generate|apply|materialize``: synthetic offline data and training
sets, ``feast apply`` and materialization into Redis, all through the Feast SDK.
``--pipeline`` is a pipeline name or file (``features.pipelines``): its Feast repo is the
one the file names, and the synthetic data is that repo's domain (fraud, pricing).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from features.argtypes import fraction, positive_int
from features.pipelines import pipeline_arg

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this package's commands to the top-level parser."""
    features = sub.add_parser(
        "features",
        help="generate synthetic feature data, apply Feast repos, materialize into Redis",
        description="Feature side of streamscore: synthetic offline data and training sets, "
        "'feast apply' and materialization of the pipeline's Feast repo (Redis online store).",
    )
    actions = features.add_subparsers(
        dest="features_action", metavar="COMMAND", parser_class=type(features)
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
    gen.add_argument("--pipeline", required=True, type=pipeline_arg, metavar="PIPELINE",
                     help="pipeline name or YAML file")
    gen.add_argument("--out", type=Path, default=None, metavar="PATH",
                     help="output dir (default: the data dir of the pipeline's Feast repo, "
                     "$STREAMSCORE_HOME/data/<fraud|pricing>)")
    gen.add_argument("--cards", type=positive_int, default=100_000, metavar="N",
                     help="fraud: cards (100000)")
    gen.add_argument("--merchants", type=positive_int, default=5_000, metavar="N",
                     help="fraud: merchants (5000)")
    gen.add_argument("--skus", type=positive_int, default=20_000, metavar="N",
                     help="pricing: SKUs (20000)")
    gen.add_argument("--stores", type=positive_int, default=200, metavar="N",
                     help="pricing: stores (200)")
    gen.add_argument("--rows", type=positive_int, default=None, metavar="N",
                     help="training events (default: 2 x cards for fraud, 10 x SKUs for pricing)")
    gen.add_argument("--fraud-rate", type=fraction, default=0.02, metavar="FRACTION",
                     help="fraud: target share of fraudulent events (0.02)")
    gen.add_argument("--seed", type=int, default=7, metavar="SEED", help="random seed (7)")
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
        p.add_argument("--pipeline", type=pipeline_arg, default=None, metavar="PIPELINE",
                       help="pipeline name or YAML file whose Feast repo to use (or --repo)")
        p.add_argument("--repo", type=Path, default=None, metavar="PATH",
                       help="Feast repo dir (default: the repo the --pipeline file names)")
        p.add_argument("--redis-url", default=None, metavar="URL",
                       help="Redis URL overriding the repo's connection string "
                       "(default: $STREAMSCORE_FEAST_REDIS, else $REDIS_URL, else 127.0.0.1:6379)")
        if name == "materialize":
            p.add_argument("--start", type=_when, default=None, metavar="TIME",
                           help="window start, ISO 8601 (UTC if no zone)")
            p.add_argument("--end", type=_when, default=None, metavar="TIME",
                           help="window end (default now)")
            p.add_argument("--days", type=float, default=None, metavar="DAYS",
                           help="window = the last DAYS days (instead of --start)")
            p.add_argument("--views", nargs="+", default=None, metavar="NAME",
                           help="only these feature views")
            p.add_argument("--chunk-rows", type=positive_int, default=50_000, metavar="N",
                           help="max offline rows per materialize call (bounds memory; 50000)")
            p.add_argument("--apply", action="store_true", help="apply the repo first")
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
            p.set_defaults(func=_materialize)
        else:
            p.set_defaults(func=_apply)


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _repo(args: argparse.Namespace) -> Path:
    from features.exceptions import FeatureRepoError
    from features.pipelines import pipeline_repo

    if args.repo is not None:
        return Path(args.repo)
    if args.pipeline is None:
        raise FeatureRepoError("give --pipeline PIPELINE (a name or a file) or --repo PATH")
    return pipeline_repo(args.pipeline)


def _generate(args: argparse.Namespace) -> int:
    from features.pipelines import pipeline_kind, pipeline_repo
    from features.repo import repo_data_dir
    from features.synthetic import generate

    kind = pipeline_kind(args.pipeline)
    out = args.out or repo_data_dir(pipeline_repo(args.pipeline))
    result = generate(
        kind, out, rows=args.rows, seed=args.seed, cards=args.cards,
        merchants=args.merchants, skus=args.skus, stores=args.stores,
        fraud_rate=args.fraud_rate, progress=not args.no_progress,
    )  # fmt: skip
    for name, path in result.files.items():
        rows = result.rows.get(name)
        print(f"  {path}" + (f"  ({rows:,} rows)" if rows is not None else ""))
    label = "fraud rate" if kind == "fraud" else "mean units"
    print(
        f"generated {kind} data in {result.seconds:.1f} s "
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
