"""The ``streamscore outcomes`` command: join outcomes back to decisions, publish online
metrics per model version (topic, JSONL, Prometheus) until stopped.

It runs beside the workers, in its own process (``stream.kafka.outcomes``): the
decision path never waits for it. Topic names default to the pipeline's decisions topic,
``<decisions topic>.outcomes`` and ``<decisions topic>.outcome-metrics``.
"""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

from features.argtypes import fraction, non_negative, port, positive_int
from features.pipelines import pipeline_arg
from schemas.errors import ConfigError
from stream.cli.grammar import BOOTSTRAP_HELP, add_bootstrap

__all__ = ["add_join_arguments", "register", "service_from_args"]


def add_join_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``outcomes`` and ``model compare``: where and how to join."""
    p.add_argument("--pipeline", required=True, type=pipeline_arg, metavar="PIPELINE",
                   help="pipeline name (in pipelines/) or YAML file")
    p.add_argument("--outcomes-topic", metavar="NAME",
                   help="outcomes topic (default <decisions topic>.outcomes)")
    p.add_argument("--horizon", type=non_negative, default=30 * 86400.0, metavar="S",
                   help="an outcome joins its decision only within this delay (default 30 d)")
    p.add_argument("--replay", type=non_negative, default=None, metavar="S",
                   help="on start, read both topics from this long ago (default: horizon)")
    p.add_argument("--max-pending", type=positive_int, default=1_000_000, metavar="N",
                   help="sampled decisions kept waiting for outcomes (default 1,000,000; "
                        "~190 MB per million)")
    p.add_argument("--sample-rate", type=fraction, default=1.0, metavar="FRACTION",
                   help="share of decisions kept, by a hash of the event id (default 1)")
    p.add_argument("--window", type=positive_int, default=10_000, metavar="N",
                   help="joined pairs per model version in the metrics window (default 10,000)")
    p.add_argument("--thresholds", default="", metavar="A,B,...",
                   help="score thresholds for precision/recall (default: the bands policy's "
                        "review and decline thresholds, else 0.5)")
    add_bootstrap(p, BOOTSTRAP_HELP)


def _thresholds(args: argparse.Namespace, cfg: Any) -> tuple[float, ...]:
    if args.thresholds:
        try:
            return tuple(float(t) for t in args.thresholds.split(","))
        except ValueError:
            raise ConfigError(f"--thresholds: not numbers: {args.thresholds!r}") from None
    policy = cfg.policy
    if getattr(policy, "kind", "") == "fraud" or hasattr(policy, "review_above"):
        return (float(policy.review_above), float(policy.decline_above))
    return (0.5,)


def service_from_args(args: argparse.Namespace, *, metrics_topic: str | None = None,
                      jsonl: str | None = None, exporter: Any = None,
                      interval: float = 10.0) -> Any:
    """An assigned :class:`OutcomeService` for the pipeline and options."""
    from stream.config import load_pipeline
    from stream.drift.outcomes import OutcomeConfig
    from stream.endpoints import resolve_bootstrap
    from stream.kafka.outcomes import OutcomeService

    cfg = load_pipeline(args.pipeline)
    if args.max_pending < 1 or args.window < 1 or not 0 < args.sample_rate <= 1:
        raise ConfigError("--max-pending and --window must be >= 1, --sample-rate in (0, 1]")
    config = OutcomeConfig(horizon_seconds=args.horizon, max_pending=args.max_pending,
                           sample_rate=args.sample_rate, window=args.window,
                           thresholds=_thresholds(args, cfg))
    bootstrap = resolve_bootstrap(args.bootstrap_servers or cfg.kafka.bootstrap_servers)
    service = OutcomeService(
        pipeline=cfg.name, bootstrap=bootstrap, decisions_topic=cfg.topics.decisions,
        outcomes_topic=args.outcomes_topic or f"{cfg.topics.decisions}.outcomes",
        metrics_topic=metrics_topic, config=config,
        settings={**cfg.kafka.settings, **cfg.kafka.consumer}, jsonl=jsonl,
        exporter=exporter, interval=interval, replay_seconds=args.replay)
    service.assign()
    return service


def _run(args: argparse.Namespace) -> int:
    from stream.config import load_pipeline
    from stream.drift.outcome_stream import OutcomeMetricsExporter

    cfg = load_pipeline(args.pipeline)
    exporter = OutcomeMetricsExporter(cfg.name)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1" if args.metrics_local else "",
                          registry=exporter.registry)
    service = service_from_args(
        args, metrics_topic=args.metrics_topic or f"{cfg.topics.decisions}.outcome-metrics",
        jsonl=args.jsonl, exporter=exporter, interval=args.interval)
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not stop and (deadline is None or time.monotonic() < deadline):
            service.poll()
    except KeyboardInterrupt:
        pass
    finally:
        records = service.publish()
        service.close()
    for r in records:
        auc = "-" if r.auc is None else f"{r.auc:.4f}"
        print(f"{r.model_version} ({r.role}): {r.n} joined pairs, AUC {auc}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``outcomes`` to the top-level parser."""
    p = sub.add_parser(
        "outcomes", help="join outcomes back to decisions, online metrics per model version",
        description="Read the decisions and outcomes topics, join outcomes (event_id, label, "
        "outcome_time) to a bounded sample of decisions within a horizon, and publish AUC, "
        "precision/recall at thresholds, Brier, reliability and label delay per model "
        "version to a topic, a JSONL file and Prometheus, until stopped.")
    add_join_arguments(p)
    p.add_argument("--metrics-topic", metavar="NAME",
                   help="where metric records go (default <decisions topic>.outcome-metrics)")
    p.add_argument("--jsonl", metavar="PATH",
                   help="also append metric records here (for 'drift report --outcomes')")
    p.add_argument("--interval", type=non_negative, default=10.0, metavar="S",
                   help="seconds between metric records (default 10)")
    p.add_argument("--metrics-port", type=port, default=None, metavar="PORT",
                   help="serve Prometheus metrics on this port")
    p.add_argument("--metrics-local", action="store_true",
                   help="bind the metrics port to 127.0.0.1 only")
    p.add_argument("--duration", type=non_negative, default=0.0, metavar="S",
                   help="stop after this long (default: run until interrupted)")
    p.set_defaults(func=_run)
