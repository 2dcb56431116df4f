"""``streamscore run`` (the scoring worker, N processes) and ``streamscore produce`` (load).

``run --pipeline PIPELINE --workers N`` starts N worker processes in one consumer group; two
machines running it share the partitions through Kafka's group protocol, nothing else.
SIGTERM/SIGINT finish the current batch, wait for every ack in flight, commit and close.

``produce --pipeline PIPELINE --events N --rate RATE`` writes input events at a steady rate
(replaying ``$STREAMSCORE_HOME/data/<P>/events.parquet`` when generated, else random
events), with ``--bad-ratio`` of them malformed in assorted ways, keyed by entity.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any

from features.argtypes import fraction, non_negative, port, positive_int
from features.pipelines import pipeline_arg
from schemas.errors import ConfigError
from stream.cli.grammar import BOOTSTRAP_HELP, add_bootstrap

__all__ = ["register", "run_workers"]

log = logging.getLogger(__name__)


def _install_signals(stop: Any) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing the current batch, waiting for the acks of all in "
                 "flight, then stopping", signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _run_one(path: str, index: int, options: dict[str, Any]) -> int:
    from stream.config import load_pipeline
    from stream.worker import Worker

    config = load_pipeline(path)
    port = options.get("metrics_port")
    if port is None:
        port = config.metrics.port
    if port > 0:
        port += index
    from stream.worker import default_instance_id

    settings: dict[str, Any] = {}
    if options.get("instance_id"):
        # Static membership: a restarted worker with the same id takes its partitions
        # back at once, without waiting for the old session to expire.
        settings["group.instance.id"] = f"{options['instance_id']}-{index}"
    # Worker i of this instance: its exactly-once transactional id survives a restart.
    instance = f"{options.get('instance_id') or default_instance_id()}-{index}"
    worker = Worker(
        config, worker_id=options.get("worker_id") or None, metrics_port=port,
        bootstrap=options.get("bootstrap") or None,
        exactly_once=options.get("exactly_once"), batch_max=options.get("batch"),
        consumer_settings=settings, max_inflight_batches=options.get("max_inflight") or 16,
        idle_backoff_ms=options.get("idle_backoff_ms"), instance_id=instance,
    )
    _install_signals(worker.request_stop)
    worker.run(idle_exit_s=options.get("idle_exit"))
    return 0


def _child(path: str, index: int, options: dict[str, Any]) -> None:  # pragma: no cover
    from stream.logs import setup_logging

    setup_logging(options.get("log_level"), json_lines=options.get("log_json"))
    try:
        sys.exit(_run_one(path, index, options))
    except Exception as exc:
        print(f"streamscore: error: worker {index}: {exc}", file=sys.stderr)
        sys.exit(1)


def run_workers(path: str, workers: int, options: dict[str, Any]) -> int:
    """Run ``workers`` worker processes (1 = this process) until they stop."""
    if workers < 1:
        raise ConfigError("--workers must be >= 1")
    if workers == 1:
        return _run_one(path, 0, options)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(path, i, options), name=f"worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()

    def forward() -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    _install_signals(forward)
    for p in procs:
        p.join()
    failed = [p.name for p in procs if p.exitcode]
    if failed:
        print(f"streamscore: error: {', '.join(failed)} exited with errors", file=sys.stderr)
        return 1
    return 0


def _handle_run(args: argparse.Namespace) -> int:
    options = {"metrics_port": args.metrics_port, "exactly_once": args.exactly_once or None,
               "batch": args.batch, "worker_id": args.worker_id, "idle_exit": args.idle_exit,
               "instance_id": args.instance_id, "max_inflight": args.max_inflight,
               "idle_backoff_ms": args.idle_backoff_ms, "log_level": args.log_level,
               "log_json": args.log_json, "bootstrap": args.bootstrap_servers}
    return run_workers(str(args.pipeline), args.workers, options)


def _handle_produce(args: argparse.Namespace) -> int:
    from stream.config import load_pipeline
    from stream.dev.load import produce_events
    from stream.endpoints import resolve_bootstrap
    from stream.kafka.admin import ensure_topics

    config = load_pipeline(args.pipeline)
    bootstrap = resolve_bootstrap(args.bootstrap_servers or config.kafka.bootstrap_servers)
    t = config.topics
    ensure_topics(bootstrap, [t.input, t.decisions, t.dead_letter, t.drift],
                  partitions=t.partitions, replication_factor=t.replication_factor,
                  settings=dict(config.kafka.settings))
    started = time.perf_counter()
    counts = produce_events(config, bootstrap, args.events, args.rate, bad_ratio=args.bad_ratio,
                            seed=args.seed, settings=dict(config.kafka.settings))
    took = time.perf_counter() - started
    print(f"produced {counts['good']} good and {counts['bad']} malformed events to "
          f"{t.input} in {took:.1f} s ({args.events / max(took, 1e-9):,.0f}/s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``run`` and ``produce``."""
    p = sub.add_parser(
        "run", help="run the scoring worker on a pipeline",
        description="Consume the pipeline's input topic, score every event and publish one "
        "decision per good event (one dead letter per bad one); offsets are committed only "
        "after every output is acknowledged. SIGTERM/SIGINT drain and stop cleanly.",
    )
    p.add_argument("--pipeline", required=True, type=pipeline_arg, metavar="PIPELINE",
                   help="pipeline name or YAML file")
    add_bootstrap(p, BOOTSTRAP_HELP)
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="worker processes in the consumer group (default 1)")
    p.add_argument("--metrics-port", type=port, default=None, metavar="PORT",
                   help="/metrics, /healthz, /readyz port (worker i uses PORT+i; 0 = any "
                   "free port, -1 = off; default from the pipeline file)")
    p.add_argument("--exactly-once", action="store_true",
                   help="Kafka transactions: outputs and offsets commit atomically")
    p.add_argument("--batch", type=positive_int, default=None, metavar="N",
                   help="max messages per micro-batch (default from the pipeline file)")
    p.add_argument("--worker-id", default="", metavar="ID",
                   help="worker id in records (default host-pid)")
    p.add_argument("--instance-id", default="", metavar="ID",
                   help="static group membership: worker i uses ID-i, so a restarted "
                   "worker gets its partitions back without waiting for a session timeout; "
                   "also names its exactly-once transactional id (default "
                   "$STREAMSCORE_INSTANCE_ID, else the host name, for the transactional id "
                   "only)")
    p.add_argument("--max-inflight", type=positive_int,
                   default=os.environ.get("STREAMSCORE_MAX_INFLIGHT") or 16, metavar="N",
                   help="batches whose outputs may await the broker's acks while later "
                   "batches are scored (offsets are still committed only after them); 1 = "
                   "wait for every batch's acks before the next (default "
                   "$STREAMSCORE_MAX_INFLIGHT, else 16)")
    # Developer-only (hidden from --help): an emulator workaround and a test/benchmark stop.
    # --idle-backoff-ms MS pauses the input partitions for MS ms once input stops, so a
    # broker that answers empty fetches at once (noida-db) is not spun; 0 = off (default
    # $STREAMSCORE_IDLE_BACKOFF_MS, else the pipeline's batch.idle_backoff_ms).
    p.add_argument("--idle-backoff-ms", type=non_negative, default=None, metavar="MS",
                   help=argparse.SUPPRESS)
    # --idle-exit S stops after S seconds without input.
    p.add_argument("--idle-exit", type=non_negative, default=None, metavar="S",
                   help=argparse.SUPPRESS)
    p.set_defaults(func=_handle_run)

    q = sub.add_parser(
        "produce", help="produce input events to a pipeline's topic",
        description="Write N input events at a steady rate to the pipeline's input topic "
        "(creating the pipeline's topics if missing), optionally with malformed ones.",
    )
    q.add_argument("--pipeline", required=True, type=pipeline_arg, metavar="PIPELINE",
                   help="pipeline name or YAML file")
    add_bootstrap(q, BOOTSTRAP_HELP)
    q.add_argument("--events", type=positive_int, default=10_000, metavar="N",
                   help="events (default 10000)")
    q.add_argument("--rate", type=non_negative, default=1000.0, metavar="RATE",
                   help="events per second; 0 = as fast as possible (default 1000)")
    q.add_argument("--bad-ratio", type=fraction, default=0.0, metavar="FRACTION",
                   help="fraction of malformed events (default 0)")
    q.add_argument("--seed", type=int, default=1, metavar="SEED", help="random seed (default 1)")
    q.set_defaults(func=_handle_produce)
