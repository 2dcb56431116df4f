"""``streamscore bench e2e``: the end-to-end latency sweep, worker vs naive stack vs hop.

For each stack (the plain broker hop, the streamscore worker, the naive per-event
worker), on the same broker, Redis, model and events, in one run:

1. warm up (start the processes, wait until warm-up events come back);
2. drain: pause the stack (SIGSTOP), pile up a backlog, resume, time how fast it clears;
3. sweep: offer rates step by step (open loop, see ``benchmarks.loadgen``), match every
   output to its event, and stop after the first rate where p99 exceeds the budget or
   the output stops following the offered rate.

Latency is scheduled send -> output received by the harness; the worker's own
latency is fetch -> decision produced (its ``decided_at`` stamp to the decision
message's timestamp). Reports (JSON, Markdown, PNG) go to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "fixed_size_model", "run", "run_sweep"]

DEFAULT_RATES = "1000,2000,5000,10000,20000,50000"
QUICK_RATES = "100,500,1000,2000,5000"
STACKS = ("hop", "worker", "naive")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's flags (cheap: no heavy imports)."""
    parser.add_argument("--pipeline", choices=("fraud", "pricing"), default="fraud",
                        help="which shipped workload to generate and run (default fraud)")
    parser.add_argument("--rates", default=None, metavar="LIST",
                        help=f"offered rates, comma-separated (default {DEFAULT_RATES}; "
                             f"--quick {QUICK_RATES})")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="seconds of load per rate step (default 10; --quick 3)")
    parser.add_argument("--stacks", default=",".join(STACKS), metavar="LIST",
                        help="which stacks, comma-separated: hop, worker, naive")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes in one consumer group (default 1)")
    parser.add_argument("--naive-workers", type=int, default=1, metavar="N",
                        help="naive processes in one consumer group (default 1)")
    parser.add_argument("--budget-ms", type=float, default=None, metavar="MS",
                        help="latency budget (default: the pipeline file's budget_ms)")
    parser.add_argument("--drain-events", type=int, default=None, metavar="N",
                        help="backlog size of the drain measurement (default 50000; "
                             "--quick 10000; the naive stack gets 1/20 of it, 200..2000)")
    parser.add_argument("--drain-batch", type=int, default=None, metavar="N",
                        help="the worker's max events per micro-batch ('streamscore run --batch "
                             "N') for the whole run (default: the pipeline file's); the drain's "
                             "backlog fills every batch, so --drain-batch 512 gives the drain's "
                             "drift / score at the target's 512-event batch")
    parser.add_argument("--model-trees", type=int, default=None, metavar="N",
                        help="score with a model of exactly N trees (no early stopping), "
                             "trained once on the workspace's data and kept in its registry "
                             "(default: the workspace's champion; on --size full early "
                             "stopping ends the fraud model at ~180 trees; bench drift's "
                             "model has 500)")
    parser.add_argument("--reason-codes", type=int, default=None, metavar="N",
                        help="reason codes per decision in the worker (default: the pipeline "
                             "file's; 0 = none, the same work as the naive stack)")
    parser.add_argument("--features-timeout-ms", type=float, default=None, metavar="MS",
                        help="the worker's online-store timeout (default: the pipeline file's; "
                             "on a saturated machine a short one trips the breaker and the "
                             "worker decides without features, see 'degraded')")
    parser.add_argument("--partitions", type=int, default=4, metavar="N",
                        help="input topic partitions")
    parser.add_argument("--size", choices=("tiny", "quick", "full"), default=None,
                        help="generated data size (default full; --quick quick)")
    parser.add_argument("--workspace", default=None, metavar="PATH",
                        help="where data, Feast repo and model are kept between runs "
                             "(default $STREAMSCORE_HOME/bench/e2e/<pipeline>-<size>)")
    from stream.cli.grammar import add_bootstrap
    from stream.dev.embedded import BROKER_CHOICES

    add_bootstrap(parser, "Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, "
                  "'dev up', else an embedded broker started for the run)")
    parser.add_argument("--broker", choices=BROKER_CHOICES, default=None,
                        help="embedded broker kind when one is started (default: "
                             "$STREAMSCORE_BROKER or auto: Apache Kafka where Java 17+ runs)")
    parser.add_argument("--zipf", type=float, default=1.1, metavar="X",
                        help="hot-key skew exponent")
    parser.add_argument("--unknown-share", type=float, default=0.02, metavar="FRACTION",
                        help="share of events with unknown entities")
    parser.add_argument("--malformed-share", type=float, default=0.01, metavar="FRACTION",
                        help="share of malformed events (dead-letter path)")
    parser.add_argument("--startup-timeout", type=float, default=180.0, metavar="S",
                        help="seconds a stack may take to answer its warm-up events")
    parser.add_argument("--all-rates", action="store_true",
                        help="keep stepping past the first rate over budget (the whole curve) "
                             "until the output falls below half the offered rate")
    parser.add_argument("--profile", action="store_true",
                        help="sample the worker/naive processes with py-spy during the sweep "
                             "and report where their time goes")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quick", action="store_true", help="short run (make bench)")
    parser.add_argument("--out", default="benchmarks/out", metavar="PATH", help="report directory")


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    rates = [float(r) for r in str(args.rates or (QUICK_RATES if quick else DEFAULT_RATES))
             .split(",") if r.strip()]
    stacks = [s.strip() for s in str(args.stacks).split(",") if s.strip()]
    bad = [s for s in stacks if s not in STACKS]
    if bad or not stacks:
        from schemas.errors import ConfigError

        raise ConfigError(f"--stacks: unknown stack(s) {bad}; choose from {', '.join(STACKS)}")
    if not rates or min(rates) <= 0:
        from schemas.errors import ConfigError

        raise ConfigError("--rates must be positive numbers")
    if getattr(args, "model_trees", None) is not None and args.model_trees < 1:
        from schemas.errors import ConfigError

        raise ConfigError("--model-trees must be a positive number of trees")
    if args.drain_batch is not None and args.drain_batch < 1:
        from schemas.errors import ConfigError

        raise ConfigError("--drain-batch must be a positive number of events")
    return {
        "rates": sorted(rates), "stacks": stacks,
        "duration": float(args.duration or (3.0 if quick else 10.0)),
        "drain": int(args.drain_events if args.drain_events is not None
                     else (10_000 if quick else 50_000)),
        "size": args.size or ("quick" if quick else "full"),
    }


@contextlib.contextmanager
def _infrastructure(args: argparse.Namespace) -> Iterator[tuple[str, str, str]]:
    """(bootstrap, broker label, redis url); starts an embedded broker/Redis if needed."""
    from schemas.errors import InfrastructureError
    from stream.dev.embedded import resolve_redis, start_broker
    from stream.endpoints import resolve_bootstrap, resolve_redis_url

    started: list[Any] = []
    try:
        try:
            bootstrap, label = resolve_bootstrap(args.bootstrap_servers), "configured"
        except InfrastructureError:
            broker = start_broker(args.broker)
            started.append(broker)
            bootstrap, label = broker.address, f"embedded {broker.label}"
        try:
            redis_url = resolve_redis_url("")
        except InfrastructureError:
            server = resolve_redis()
            started.append(server)
            redis_url = server.url
        yield bootstrap, label, redis_url
    finally:
        for proc in reversed(started):
            proc.stop()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``streamscore bench e2e``."""
    from benchmarks.report import write_reports

    with _infrastructure(args) as (bootstrap, broker_label, redis_url):
        result = run_sweep(args, bootstrap=bootstrap, broker_label=broker_label,
                           redis_url=redis_url)
    files = write_reports(result, args.out, plots=not args.no_plots)
    s = result["summary"]
    print(f"bench e2e: report {files[1]}")
    for key, value in s.items():
        print(f"  {key}: {value}")
    return 0 if result["complete"] else 1


def run_sweep(
    args: argparse.Namespace, *, bootstrap: str, broker_label: str, redis_url: str,
) -> dict[str, Any]:
    """Run warm-up, drain and sweep for every stack; return the result dict."""
    import os

    from confluent_kafka import Producer
    from tqdm import tqdm

    from benchmarks.loadgen import EventFactory
    from benchmarks.report import machine_info
    from benchmarks.sweep import summarize
    from benchmarks.workspace import prepare_workspace
    from stream.config import load_pipeline
    from stream.endpoints import home_dir

    cfg = _resolve(args)
    root = Path(__file__).resolve().parent.parent
    budget = float(args.budget_ms or load_pipeline(root / "pipelines" / f"{args.pipeline}.yaml")
                   .budget_ms)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine = machine_info(redis_url)
    ws_root = Path(args.workspace) if args.workspace else (
        home_dir() / "bench" / "e2e" / f"{args.pipeline}-{cfg['size']}")
    print(f"bench e2e: preparing workspace {ws_root} (data, Feast online rows, model) ...")
    # Quick runs train a smaller model so a fresh clone's first 'make bench' stays short.
    ws = prepare_workspace(args.pipeline, ws_root, redis_url, size=cfg["size"],
                           progress=not getattr(args, "quiet", False),
                           num_trees=150 if cfg["size"] != "full" else None)
    if getattr(args, "model_trees", None):
        ws = fixed_size_model(ws, args.model_trees, progress=not getattr(args, "quiet", False))
    factory = EventFactory.from_data_dir(
        args.pipeline, ws.data_dir, zipf_s=args.zipf, unknown_share=args.unknown_share,
        malformed_share=args.malformed_share,
    )
    tag = "b" + uuid.uuid4().hex[:8]
    producer: Any = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1,
                         "queue.buffering.max.messages": 2_000_000})
    result: dict[str, Any] = {
        "started_at": started_at, "command": shlex.join(["streamscore", *sys.argv[1:]])
        if Path(sys.argv[0]).name == "streamscore" else shlex.join(sys.argv),
        "machine": machine,
        "settings": {"pipeline": args.pipeline, "budget_ms": budget, "broker": broker_label,
                     "bootstrap": bootstrap, "rates": cfg["rates"], "duration_s":
                     cfg["duration"], "workers": args.workers, "naive_workers":
                     args.naive_workers, "partitions": args.partitions, "data_size":
                     cfg["size"], "zipf": args.zipf, "unknown_share": args.unknown_share,
                     "malformed_share": args.malformed_share, "model": str(ws.model_path),
                     "model_ref": ws.model_ref,
                     "reason_codes": args.reason_codes if args.reason_codes is not None
                     else "pipeline default",
                     "worker_batch": args.drain_batch or "pipeline default",
                     "workspace_timings": ws.timings},
        "stacks": {}, "notes": [],
    }
    progress = tqdm(total=len(cfg["stacks"]) * (len(cfg["rates"]) + 2), desc="bench e2e",
                    unit="step", disable=not sys.stderr.isatty())
    log_dir = Path(args.out) / "logs"
    try:
        _run_stacks(args, cfg, result, ws, factory, producer, tag, bootstrap, redis_url,
                    budget, log_dir, progress)
    finally:
        producer.flush(10)
        producer = None  # destroyed now, before the broker it talks to is stopped
        progress.close()
    summarize(result, budget)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def fixed_size_model(ws: Any, trees: int, *, progress: bool = False) -> Any:
    """``ws`` scoring with a model of exactly ``trees`` trees (early stopping off), found
    in the workspace's registry under the alias ``trees<N>`` or trained there once (again
    when the workspace's training data is newer than it)."""
    from dataclasses import replace

    from scorers.registry import ModelNotFoundError, Registry
    from scorers.train import TrainOptions, train_and_register

    registry = Registry(ws.models)
    alias = f"trees{int(trees)}"
    ref = f"{ws.pipeline}@{alias}"
    data = ws.data_dir / "training.parquet"
    try:
        version = registry.resolve(ref)
        if version.model_path.stat().st_mtime < data.stat().st_mtime:
            raise ModelNotFoundError("trained on older data")
    except ModelNotFoundError:
        version = train_and_register(
            pipeline=ws.pipeline, data=data, registry=registry, promote=[alias],
            options=TrainOptions(num_trees=int(trees), early_stopping_rounds=0,
                                 progress=progress))
    return replace(ws, model_ref=ref, model_path=version.model_path)


def _naive_drain(events: int) -> int:
    # The naive stack drains ~20-50x slower; a proportional backlog keeps its drain short.
    return min(events, max(200, min(2000, events // 20)))


def _run_stacks(
    args: argparse.Namespace, cfg: dict[str, Any], result: dict[str, Any], ws: Any,
    factory: Any, producer: Any, tag: str, bootstrap: str, redis_url: str, budget: float,
    log_dir: Path, progress: Any,
) -> None:
    import os

    from benchmarks.hop import HopStack
    from benchmarks.stacks import naive_stack, worker_stack
    from benchmarks.sweep import run_stack
    from benchmarks.workspace import write_pipeline_file
    from stream.dev.embedded import free_port
    from stream.endpoints import home_dir
    from stream.kafka.admin import ensure_topics

    for name in cfg["stacks"]:
        topics = {k: f"{tag}-{name}-{k}" for k in ("input", "decisions", "dead_letter", "drift")}
        group = f"{tag}-{name}"
        if name == "hop":
            ensure_topics(bootstrap, [topics["input"]], partitions=args.partitions)
            stack: Any = HopStack(topics["input"])
        else:
            ensure_topics(bootstrap, list(topics.values()), partitions=args.partitions)
            if name == "worker":
                pfile = write_pipeline_file(
                    ws, ws.root / f"pipeline-{tag}.yaml", bootstrap=bootstrap, topics=topics,
                    group=group, metrics_port=free_port(), budget_ms=budget,
                    partitions=args.partitions, reason_codes=args.reason_codes,
                    features_timeout_ms=args.features_timeout_ms)
                home = str(os.environ.get("STREAMSCORE_HOME", home_dir()))
                stack = worker_stack(pfile, topics, log_dir, copies=args.workers,
                                     batch=args.drain_batch, env={"STREAMSCORE_HOME": home})
            else:
                stack = naive_stack(bootstrap=bootstrap, topics=topics, group=group,
                                    pipeline=args.pipeline, repo=ws.repo, model=ws.model_path,
                                    redis_url=redis_url, log_dir=log_dir,
                                    copies=args.naive_workers)
        result["stacks"][name] = run_stack(
            stack, producer, factory, bootstrap=bootstrap, prefix=f"{tag}.{name}.",
            rates=cfg["rates"], duration=cfg["duration"], budget_ms=budget,
            drain_events=cfg["drain"] if name == "worker" else _naive_drain(cfg["drain"]),
            startup_timeout=args.startup_timeout, progress=progress,
            warmup_events=int(getattr(args, "warmup_events", 200)),
            profile_dir=Path(args.out) / "profiles" if getattr(args, "profile", False) else None,
            all_rates=bool(getattr(args, "all_rates", False)),
        )
