"""The ``streamscore model`` commands: train, register, list, show, promote, verify, warm.

All of them work on the model registry (``--registry PATH``, default
``$STREAMSCORE_HOME/models``) and name versions by reference: ``NAME``, ``NAME@VERSION``,
``NAME@latest`` or ``NAME@ALIAS``. ``--pipeline`` is a pipeline name or file
(``features.pipelines``); its Feast repo's domain picks the training set and vocabulary.
LightGBM, pandas and rich are imported inside the handlers so ``streamscore --help`` stays
fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from features.argtypes import fraction, positive_int
from features.pipelines import pipeline_arg

__all__ = ["register"]


def _registry(args: argparse.Namespace) -> Any:
    from scorers.registry import Registry

    return Registry(args.registry)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _param(value: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value when it parses (numbers, true/false), else a string."""
    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw
    return key.strip(), parsed


def _cmd_train(args: argparse.Namespace) -> int:
    from features.pipelines import pipeline_kind
    from scorers.train import TrainOptions, train_and_register

    if args.pipeline is None and args.data is None:
        from scorers.registry import RegistryError

        raise RegistryError("model train needs --pipeline PIPELINE or --data PATH")
    options = TrainOptions(
        num_trees=args.trees,
        num_leaves=args.leaves,
        learning_rate=args.learning_rate,
        valid_fraction=args.valid_fraction,
        early_stopping_rounds=args.early_stopping,
        split=args.split,
        seed=args.seed,
        threads=args.threads,
        bins=args.bins,
        progress=not args.no_progress,
        params=dict(args.param or []),
    )
    mv = train_and_register(
        pipeline=pipeline_kind(args.pipeline) if args.pipeline is not None else None,
        data=args.data,
        name=args.name,
        registry=_registry(args),
        label=args.label,
        features=args.features,
        categorical=args.categorical,
        objective=args.objective,
        options=options,
        promote=args.promote or [],
    )
    m = mv.metadata.get("metrics", {})
    shown = ", ".join(
        f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float) and k != "label_rate"
    )
    aliases = [a for a, v in _registry(args).aliases(mv.name).items() if v == mv.version]
    print(
        f"registered {mv.ref} ({mv.metadata.get('num_trees')} trees, "
        f"{len(mv.feature_names)} features; holdout {shown})"
        + (f" as {', '.join(sorted(aliases))}" if aliases else "")
    )
    print(f"sha256 {mv.sha256}  {mv.model_path}")
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    meta: dict[str, Any] = {}
    if args.description:
        meta["description"] = args.description
    if args.data:
        from features.pipelines import pipeline_kind
        from scorers.registry import read_model_text
        from scorers.train import describe_model

        text = read_model_text(args.file)[0]
        kind = pipeline_kind(args.pipeline) if args.pipeline is not None else None
        meta.update(describe_model(text, args.data, label=args.label, pipeline=kind))
    mv = _registry(args).register(args.file, args.name, meta, aliases=args.alias or [])
    print(f"registered {mv.ref} sha256 {mv.sha256}")
    if mv.reference is None:
        print("note: no reference statistics for drift monitoring (pass --data PARQUET)")
    elif "metrics" in mv.metadata:
        print(f"reference from {mv.reference['n']} rows; {_headline_metric(mv.metadata)}")
    return 0


def _headline_metric(meta: dict[str, Any]) -> str:
    m = meta.get("metrics") or {}
    for key in ("auc", "rmse", "logloss", "accuracy", "mae"):
        if isinstance(m.get(key), (int, float)):
            return f"{key} {m[key]:.4f}"
    return "-"


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    reg = _registry(args)
    versions = reg.list(args.name)
    if not versions:
        print(f"no models in {reg.root}")
        return 0
    by_name: dict[str, dict[int, list[str]]] = {}
    for n in {mv.name for mv in versions}:
        by_name[n] = {}
        for alias, v in reg.aliases(n).items():
            by_name[n].setdefault(v, []).append(alias)
    table = Table(title=f"models in {reg.root}")
    for col in (
        "name",
        "version",
        "aliases",
        "created (UTC)",
        "objective",
        "trees",
        "features",
        "holdout",
        "sha256",
    ):
        numeric = col in ("version", "trees", "features")
        table.add_column(col, justify="right" if numeric else "left")
    for mv in versions:
        md = mv.metadata
        table.add_row(
            mv.name,
            str(mv.version),
            ", ".join(sorted(by_name[mv.name].get(mv.version, []))),
            str(md.get("created_at", "-")).replace("T", " ").rstrip("Z"),
            str(md.get("objective", "-")),
            str(md.get("num_trees", "-")),
            str(len(mv.feature_names)),
            _headline_metric(md),
            mv.sha256[:12],
        )
    Console(width=max(Console().width, 120)).print(table)
    return 0


def _summarise_reference(ref: dict[str, Any]) -> dict[str, Any]:
    feats = ref.get("features", {})
    return {
        "n": ref.get("n"),
        "features": {
            name: (
                f"numeric, {len(e.get('counts', []))} bins, {e.get('missing', 0)} missing"
                if e.get("kind") == "numeric"
                else f"categorical, {len(e.get('categories', []))} categories, "
                f"{e.get('other', 0)} other, {e.get('missing', 0)} missing"
            )
            for name, e in feats.items()
        },
        "score": f"{len(ref.get('score', {}).get('counts', []))} bins",
    }


def _cmd_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    mv = reg.resolve(args.ref)
    meta = dict(mv.metadata)
    meta["aliases"] = sorted(a for a, v in reg.aliases(mv.name).items() if v == mv.version)
    meta["path"] = str(mv.path)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    from rich.console import Console
    from rich.pretty import Pretty

    if isinstance(meta.get("reference"), dict) and not args.full:
        meta["reference"] = _summarise_reference(meta["reference"])
    if isinstance(meta.get("vocab"), dict) and not args.full:
        meta["vocab"] = {k: f"{len(v)} values" for k, v in meta["vocab"].items()}
    Console(width=max(Console().width, 110)).print(f"[bold]{mv.ref}[/bold]", Pretty(meta))
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    reg = _registry(args)
    reg._check_alias(args.alias)  # a bad alias is the first thing to say
    ref = args.ref
    if args.legacy_version is not None:  # 'promote NAME VERSION', the older spelling
        ref = f"{ref}@{args.legacy_version}"
    if "@" not in ref:
        from scorers.registry import RegistryError

        raise RegistryError(f"say which version to promote: {ref}@VERSION or {ref}@ALIAS")
    target = reg.resolve(ref)
    mv = reg.promote(target.name, target.version, args.alias)
    print(f"{mv.name}@{args.alias} -> version {mv.version} (sha256 {mv.sha256[:12]})")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    reg = _registry(args)
    mv = reg.resolve(args.ref)
    mv.read_text()  # raises IntegrityError on a mismatch
    print(f"{mv.ref} ok: sha256 {mv.sha256}")
    return 0


def _cmd_warm(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from features import jitcache
    from scorers.compiled import compile_lightgbm, default_cache_dir

    reg = _registry(args)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    for ref in args.refs:
        mv = reg.resolve(ref)
        t0 = time.perf_counter()
        model = compile_lightgbm(mv.read_text(), cache_dir=cache)
        row = np.zeros((1, model.num_features))
        model.predict(row)
        model.contributions(row)
        print(f"{mv.ref}: kernels and tables ready in {time.perf_counter() - t0:.2f}s "
              f"(tables in {cache}, numba cache {jitcache.cache_dir()})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``model`` and its subcommands to the top-level parser."""
    p = sub.add_parser(
        "model",
        help="train, register, list, show and promote model versions",
        description="The model registry: versioned LightGBM text models with sha256, "
        "metadata, drift reference statistics and aliases (champion, challenger...). "
        "References (REF): NAME, NAME@VERSION, NAME@latest, NAME@ALIAS.",
    )
    msub = p.add_subparsers(dest="model_command", metavar="COMMAND")
    msub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        metavar="PATH",
        default=None,
        help="registry root (default $STREAMSCORE_HOME/models, i.e. ./.streamscore/models)",
    )
    pipeline_help = "pipeline name or YAML file"

    t = msub.add_parser(
        "train",
        parents=[common],
        help="train a model and register it with drift references",
        description="Train a LightGBM model on a pipeline's synthetic training set "
        "($STREAMSCORE_HOME/data/<fraud|pricing>/training.parquet + training.json) or any "
        "parquet, with a holdout split, early stopping and a progress bar; register it with "
        "holdout metrics and reference statistics for drift monitoring.",
    )
    t.add_argument("--pipeline", type=pipeline_arg, metavar="PIPELINE",
                   help=pipeline_help + ": train on its synthetic training set")
    t.add_argument("--data", metavar="PATH", help="training parquet (default: the pipeline's)")
    t.add_argument("--name", metavar="NAME",
                   help="model name (default: the pipeline's domain or the file's stem)")
    t.add_argument("--label", metavar="NAME", help="label column (default: from the sidecar JSON)")
    t.add_argument("--features", type=_csv, metavar="A,B,...",
                   help="ordered feature columns (default: sidecar, else numeric columns)")
    t.add_argument("--categorical", type=_csv, metavar="A,B,...",
                   help="categorical feature columns (strings are encoded with the vocabulary)")
    t.add_argument("--objective", metavar="OBJECTIVE",
                   help="LightGBM objective (default: sidecar, else inferred)")
    t.add_argument("--trees", type=positive_int, metavar="N",
                   help="maximum boosting rounds (fraud 400, pricing 300)")
    t.add_argument("--leaves", type=positive_int, metavar="N",
                   help="leaves per tree (fraud 63, pricing 31)")
    t.add_argument("--learning-rate", type=float, metavar="X",
                   help="learning rate (fraud 0.02, others 0.05)")
    t.add_argument("--valid-fraction", type=fraction, default=0.2, metavar="FRACTION",
                   help="holdout fraction (default 0.2)")
    t.add_argument("--early-stopping", type=int, default=30, metavar="N",
                   help="stop after N rounds without holdout improvement; 0 disables "
                   "(default 30)")
    t.add_argument("--split", choices=("random", "time"),
                   help="holdout split (default: time if the sidecar names a timestamp)")
    t.add_argument("--seed", type=int, default=42, metavar="SEED", help="random seed (default 42)")
    t.add_argument("--threads", type=positive_int, default=2, metavar="N",
                   help="LightGBM threads (default 2)")
    t.add_argument("--bins", type=positive_int, default=10, metavar="N",
                   help="quantile bins per numeric feature in the reference (default 10)")
    t.add_argument("--param", action="append", type=_param, metavar="KEY=VALUE",
                   help="any LightGBM parameter, e.g. --param lambda_l1=0.5; repeatable")
    t.add_argument("--promote", action="append", metavar="ALIAS",
                   help="point ALIAS (e.g. champion) at the new version; repeatable")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    r = msub.add_parser(
        "register",
        parents=[common],
        help="register an existing LightGBM text model file",
        description="Register a LightGBM text model (Booster.save_model output) as a new "
        "version. Pickles and other formats are refused.",
    )
    r.add_argument("file", metavar="PATH", help="LightGBM text model file")
    r.add_argument("--name", required=True, metavar="NAME", help="model name")
    r.add_argument("--alias", action="append", metavar="ALIAS",
                   help="also point ALIAS at the new version; repeatable")
    r.add_argument("--description", metavar="TEXT", help="free text stored in the metadata")
    r.add_argument("--data", metavar="PATH",
                   help="parquet rows shaped like the model's inputs: compute drift reference "
                   "statistics (and metrics with --label) from them")
    r.add_argument("--label", metavar="NAME", help="label column of --data, for metrics")
    r.add_argument("--pipeline", type=pipeline_arg, metavar="PIPELINE",
                   help=pipeline_help + ": encode string columns of --data with its vocabulary")
    r.set_defaults(func=_cmd_register)

    ls = msub.add_parser(
        "list",
        parents=[common],
        help="list models and versions as a table",
        description="List registered versions with aliases, creation time, objective, trees, "
        "holdout metric and sha256.",
    )
    ls.add_argument("name", nargs="?", metavar="NAME", help="only this model")
    ls.set_defaults(func=_cmd_list)

    s = msub.add_parser(
        "show",
        parents=[common],
        help="show a version's metadata",
        description="Show the metadata of a model reference (NAME, NAME@VERSION, NAME@latest, "
        "NAME@ALIAS); reference statistics are summarised unless --full or --json.",
    )
    s.add_argument("ref", metavar="REF", help="model reference, e.g. fraud@champion")
    s.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    s.add_argument("--full", action="store_true", help="do not summarise reference statistics")
    s.set_defaults(func=_cmd_show)

    pr = msub.add_parser(
        "promote",
        parents=[common],
        help="point an alias (champion, challenger...) at a version",
        description="Point an alias at the version REF names (NAME@VERSION, NAME@latest or "
        "NAME@ALIAS, e.g. 'promote fraud@challenger --alias champion'), atomically; running "
        "workers that follow NAME@ALIAS pick it up.",
    )
    pr.add_argument("ref", metavar="REF", help="the version to promote, e.g. fraud@2")
    # The older spelling 'promote NAME VERSION', kept working but no longer shown.
    pr.add_argument("legacy_version", nargs="?", type=int, default=None,
                    help=argparse.SUPPRESS)
    pr.add_argument("--alias", default="champion", metavar="ALIAS",
                    help="alias to move (default champion)")
    pr.set_defaults(func=_cmd_promote)

    v = msub.add_parser(
        "verify",
        parents=[common],
        help="check a version's model file against its sha256",
        description="Re-hash the model file of REF and compare with its registered sha256.",
    )
    v.add_argument("ref", metavar="REF", help="model reference")
    v.set_defaults(func=_cmd_verify)

    w = msub.add_parser(
        "warm",
        parents=[common],
        help="compile the scoring kernels and tables of models ahead of the first worker",
        description="Compile REF's kernels into numba's on-disk cache and its tables into "
        "the scorer's table cache, as a worker's load_model would, so that a worker started "
        "afterwards on this machine (or image, same CPU) loads them instead of compiling "
        "(seconds of JIT on a new machine, ~0.35 s of CPU with warm caches).",
    )
    w.add_argument("refs", metavar="REF", nargs="+", help="model references")
    w.add_argument("--cache-dir", metavar="PATH", default=None,
                   help="table cache (default $STREAMSCORE_HOME/cache/scorer)")
    w.set_defaults(func=_cmd_warm)
