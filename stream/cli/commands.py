"""The ``dev``, ``demo`` and ``faust`` commands of the ``streamscore`` CLI."""

from __future__ import annotations

import argparse

from features.argtypes import non_negative, port, positive_int
from features.pipelines import pipeline_arg
from stream.cli.grammar import BOOTSTRAP_HELP, COMMAND, add_bootstrap
from stream.dev.embedded import BROKER_CHOICES

__all__ = ["register"]


def _dev_up(args: argparse.Namespace) -> int:
    from stream.dev.services import dev_up

    state = dev_up(args.broker)
    verb = "already running" if state.get("already_running") else "started"
    if args.env:
        print(f"export KAFKA_BOOTSTRAP_SERVERS={state['bootstrap_servers']}")
        print(f"export REDIS_URL={state['redis_url']}")
        return 0
    print(f"streamscore dev infrastructure {verb}:")
    broker = f"{state['broker']} {state.get('broker_version', '')}".strip()
    print(f"  kafka ({broker}):  KAFKA_BOOTSTRAP_SERVERS={state['bootstrap_servers']}")
    print(f"  redis ({state['redis_origin']}):  REDIS_URL={state['redis_url']}")
    print("  streamscore commands find these by themselves; 'streamscore dev down' stops them.")
    return 0


def _dev_down(args: argparse.Namespace) -> int:
    from stream.dev.services import dev_down

    stopped = dev_down()
    if not stopped:
        print("nothing to stop")
    for line in stopped:
        print(f"stopped {line}")
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    from stream.dev.services import dev_status

    state = dev_status()
    if not state:
        print("not running (start with 'streamscore dev up')")
        return 1
    broker = f"{state['broker']} {state.get('broker_version', '')}".strip()
    print(f"kafka ({broker}): {state['bootstrap_servers']}")
    print(f"redis ({state['redis_origin']}): {state['redis_url']}")
    for entry in state["processes"]:
        status = "running" if entry["alive"] else "NOT running"
        print(f"  {entry['kind']:<6} pid {entry['pid']:<8} {entry['address']:<22} {status}")
    return 0 if all(e["alive"] for e in state["processes"]) else 1


def _demo(args: argparse.Namespace) -> int:
    from stream.dev.demo import run

    if args.legacy_pipeline is not None:  # 'demo pricing', the older spelling
        args.pipeline = args.legacy_pipeline
    return run(args)


def _faust(args: argparse.Namespace) -> int:
    import faust

    from stream.config import load_pipeline
    from stream.faust_app import create_app

    config = load_pipeline(args.pipeline)
    app = create_app(config, metrics_port=args.metrics_port,
                     bootstrap=args.bootstrap_servers or None)
    # faust.Worker handles SIGTERM/SIGINT: the agent finishes its batch, Faust commits.
    worker = faust.Worker(app, loglevel=args.faust_log_level, quiet=True)
    worker.execute_from_commandline()
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``dev``, ``demo`` and ``faust``."""
    dev = sub.add_parser(
        "dev",
        help="start/stop the embedded Kafka broker and Redis for local work",
        description="Embedded infrastructure for local work: a Kafka-protocol broker from a "
        "PyPI wheel and a Redis (the local one if it answers, else one started here).",
    )
    actions = dev.add_subparsers(dest="dev_action", metavar=COMMAND, parser_class=type(dev))
    actions.required = True
    up = actions.add_parser("up", help="start and leave running; print connection strings",
                            description="Start the embedded broker (and Redis if needed).")
    up.add_argument("--broker", choices=BROKER_CHOICES, default=None,
                    help="broker kind; auto = Apache Kafka where Java 17+ runs, else noida "
                         "(default: $STREAMSCORE_BROKER or auto)")
    up.add_argument("--env", action="store_true", help="print shell export lines only")
    up.set_defaults(func=_dev_up)
    down = actions.add_parser("down", help="stop what 'dev up' started, nothing else",
                              description="Stop the processes recorded by 'dev up'.")
    down.set_defaults(func=_dev_down)
    status = actions.add_parser("status", help="show what runs (exit 1 if not all up)",
                                description="Show the recorded processes and whether they run.")
    status.set_defaults(func=_dev_status)

    demo = sub.add_parser(
        "demo",
        help="run a pipeline end to end on embedded infrastructure and print a report",
        description="Start the embedded broker and Redis, run the pipeline end to end, print "
        "what happened, stop everything it started.",
    )
    demo.add_argument("--pipeline", type=pipeline_arg, default="fraud", metavar="PIPELINE",
                      help="pipeline name or YAML file (default fraud)")
    # The older positional spelling ('demo pricing'), kept working but no longer shown.
    demo.add_argument("legacy_pipeline", nargs="?", type=pipeline_arg, default=None,
                      help=argparse.SUPPRESS)
    demo.add_argument("--broker", choices=BROKER_CHOICES, default=None,
                      help="embedded broker kind; auto = Apache Kafka where Java 17+ runs, "
                           "else noida (default: $STREAMSCORE_BROKER or auto)")
    demo.add_argument("--events", type=positive_int, default=20_000, metavar="N",
                      help="events to produce (default 20000)")
    demo.add_argument("--rate", type=non_negative, default=2_000.0, metavar="RATE",
                      help="events per second (default 2000)")
    demo.set_defaults(func=_demo)

    fst = sub.add_parser(
        "faust",
        help="run the pipeline as a Faust app (for teams on faust-streaming)",
        description="Run the same decode -> enrich -> score -> decide stages as 'run', as a "
        "faust-streaming agent publishing the same records to the same topics.",
    )
    fst.add_argument("--pipeline", required=True, type=pipeline_arg, metavar="PIPELINE",
                     help="pipeline name or YAML file")
    add_bootstrap(fst, BOOTSTRAP_HELP)
    fst.add_argument("--metrics-port", type=port, default=None, metavar="PORT",
                     help="Prometheus/health port (default: the pipeline's; -1 disables)")
    fst.add_argument("--faust-log-level", default="warn",
                     choices=("crit", "error", "warn", "info", "debug"))
    fst.set_defaults(func=_faust)
