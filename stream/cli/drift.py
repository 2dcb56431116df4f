"""The ``streamscore drift`` command: latest drift windows as a table, PSI plot, HTML.

``streamscore drift report --pipeline PIPELINE`` reads the pipeline's drift records from the
local JSONL file the monitor appends to (``$STREAMSCORE_HOME/drift/<pipeline>.jsonl``,
or ``--file``), or with ``--from-topic`` from the pipeline's drift topic: a consumer
assigned to the last N offsets of every partition, without a consumer group commit, so
reading never moves anyone's offsets.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from features.argtypes import non_negative, positive_int
from features.pipelines import pipeline_arg
from schemas.drift import DriftRecord, decode_drift
from schemas.errors import InfrastructureError, StreamscoreError
from schemas.outcomes import OutcomeMetricsRecord, decode_metrics
from stream.cli.grammar import BOOTSTRAP_HELP, COMMAND, add_bootstrap

__all__ = ["plot_psi", "read_jsonl_records", "read_outcome_records", "read_recent_scores",
           "read_topic_records", "register", "render_report", "write_html"]


def read_jsonl_records(path: str | Path, last: int | None = None) -> list[DriftRecord]:
    """The records of a JSONL file (skipping lines that are not drift records), oldest
    first, at most the ``last`` ones."""
    import msgspec

    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        raise StreamscoreError(
            f"no drift records at {path} (run the pipeline with drift enabled, "
            "or use --from-topic)"
        ) from None
    records = []
    for line in lines:
        if line.strip():
            try:
                records.append(decode_drift(line))
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # a torn last line while the monitor writes, or foreign lines
    records.sort(key=lambda r: r.window_end)
    return records[-last:] if last else records


def read_topic_records(
    bootstrap: str,
    topic: str,
    last: int = 10,
    settings: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
) -> list[DriftRecord]:
    """The latest ``last`` records of each partition of a drift topic (oldest first,
    at most ``last`` in all), read by assignment: no group join, no offset commit."""
    records = _read_latest(bootstrap, topic, last, settings, timeout, decode_drift)
    records.sort(key=lambda r: r.window_end)
    return records[-last:]


def read_recent_scores(bootstrap: str, topic: str, last: int = 5000,
                       settings: Mapping[str, Any] | None = None,
                       timeout: float = 10.0) -> list[float]:
    """The champion's scores of the latest ``last`` decisions of each partition of the
    decisions topic (for the report's score histogram), read like the drift topic."""
    import msgspec

    from schemas.decisions import Decision

    decoder = msgspec.json.Decoder(Decision)
    return [d.score for d in _read_latest(bootstrap, topic, last, settings, timeout,
                                          decoder.decode) if d.score is not None]


def _read_latest(bootstrap: str, topic: str, last: int, settings: Mapping[str, Any] | None,
                 timeout: float, decode: Callable[[bytes], Any]) -> list[Any]:
    """The decoded latest ``last`` records of each partition (undecodable ones skipped)."""
    import time

    import msgspec
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf: dict[str, Any] = {
        **(settings or {}),
        "bootstrap.servers": bootstrap,
        "group.id": f"streamscore-drift-report-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    consumer = Consumer(conf)
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise InfrastructureError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise StreamscoreError(f"topic {topic!r} does not exist on {bootstrap}")
        assignment, ends = [], {}
        for p in sorted(info.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=timeout)
            if high > low:
                assignment.append(TopicPartition(topic, p, max(low, high - last)))
                ends[p] = high
        records: list[Any] = []
        if not assignment:
            return records
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout
        positions = {tp.partition: tp.offset for tp in assignment}
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                part, offset, value = msg.partition(), msg.offset(), msg.value()
                if msg.error() or part is None or offset is None or value is None:
                    continue
                positions[part] = offset + 1
                try:
                    records.append(decode(value))
                except (msgspec.ValidationError, msgspec.DecodeError):
                    continue
    finally:
        consumer.close()
    return records


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render_report(records: Sequence[DriftRecord], console: Any = None) -> None:
    """Print the windows (one row each) and the latest window's features as rich tables."""
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze into 80 columns
            console.width = max(console.width, 140)
    if not records:
        console.print("no drift windows yet")
        return
    latest = records[-1]
    windows = Table(title=f"drift windows: {latest.pipeline} "
                          f"(model {latest.model_name}@{latest.model_version})")
    for col in ("window end (UTC)", "events", "max PSI", "feature", "score PSI", "alarms"):
        windows.add_column(col, justify="left" if col in ("feature", "alarms") else "right")
    for r in records:
        end = datetime.fromtimestamp(r.window_end, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        top = max(r.features, key=lambda f: f.psi, default=None)
        windows.add_row(
            end, str(r.n), f"{top.psi:.4f}" if top else "-", top.name if top else "-",
            f"{r.score.psi:.4f}", ", ".join(r.alarms) or "-",
        )
    console.print(windows)
    detail = Table(title=f"latest window: {latest.n} events vs {latest.reference_n} in "
                         f"training, false-alarm rate {latest.false_alarm_rate:g} per feature")
    for col in ("feature", "kind", "PSI", "threshold", "alarm", "level", "JS", "KS",
                "Wasserstein", "missing", "train missing"):
        detail.add_column(col, justify="left" if col in ("feature", "kind", "level") else "right")
    for f in [*latest.features, latest.score]:
        detail.add_row(
            f.name, f.kind, _fmt(f.psi), _fmt(f.threshold),
            "[bold red]ALARM[/]" if f.alarm else "", f.level, _fmt(f.js), _fmt(f.ks),
            _fmt(f.wasserstein), _fmt(f.missing_rate, 3), _fmt(f.reference_missing_rate, 3),
        )
    console.print(detail)
    mix = latest.decisions
    if mix.shares:
        console.print("decisions: " + ", ".join(f"{k} {v:.1%}" for k, v in mix.shares.items()))
    if mix.mean_multiplier is not None:
        console.print(f"mean price multiplier: {mix.mean_multiplier:.4f}")
    if latest.page_hinkley_alarms:
        console.print(f"Page-Hinkley detected {latest.page_hinkley_alarms} score change(s)")


def plot_psi(records: Sequence[DriftRecord], out: str | Path) -> Path:
    """A PNG of PSI per feature (and the score) over time; alarms marked with a cross."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.pyplot as plt

    if not records:
        raise StreamscoreError("no drift windows to plot")
    times: list[Any] = [datetime.fromtimestamp(r.window_end, tz=UTC) for r in records]
    names = [f.name for f in records[-1].features] + ["score"]
    fig, ax = plt.subplots(figsize=(10, 5))
    for name in names:
        series = [next((f for f in [*r.features, r.score] if f.name == name), None)
                  for r in records]
        # Clipped at 1e-4 for the log axis (PSI is never exactly 0 with smoothing anyway).
        ys = [max(f.psi, 1e-4) if f else float("nan") for f in series]
        (line,) = ax.plot(times, ys, marker=".", label=name,
                          linewidth=2.0 if name == "score" else 1.0)
        alarm_t = [t for t, f in zip(times, series, strict=True) if f and f.alarm]
        alarm_y = [max(f.psi, 1e-4) for f in series if f and f.alarm]
        ax.plot(alarm_t, alarm_y, "x", color=line.get_color(), markersize=9)
    ax.axhline(0.1, color="grey", linestyle=":", linewidth=1)
    ax.axhline(0.25, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 1e-4), max(high * 1.5, 0.5))
    ax.set_ylabel("PSI vs training (x = calibrated alarm; lines at 0.1 and 0.25)")
    ax.set_title(f"drift: {records[-1].pipeline}")
    ax.legend(fontsize="small", ncol=2, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _report(args: argparse.Namespace) -> int:
    from stream.config import load_pipeline
    from stream.drift.monitor import default_jsonl_path

    cfg = load_pipeline(args.pipeline)
    scores: list[float] | None = None
    outcomes: list[OutcomeMetricsRecord] = []
    if args.from_topic:
        from stream.endpoints import resolve_bootstrap

        bootstrap = resolve_bootstrap(args.bootstrap_servers or cfg.kafka.bootstrap_servers)
        settings = {**cfg.kafka.settings, **cfg.kafka.consumer}
        records = read_topic_records(bootstrap, cfg.topics.drift, args.last, settings,
                                     timeout=args.timeout)
        if args.html:
            scores = read_recent_scores(bootstrap, cfg.topics.decisions, 5000, settings,
                                        timeout=args.timeout)
            if not args.outcomes:  # what 'streamscore outcomes' publishes, when it runs
                outcomes = _read_outcome_topic(bootstrap, f"{cfg.topics.decisions}"
                                               ".outcome-metrics", settings, args.timeout)
    else:
        records = read_jsonl_records(args.file or default_jsonl_path(cfg.name), args.last)
    render_report(records)
    if args.plot:
        print(f"wrote {plot_psi(records, args.plot)}")
    if args.html:
        if args.outcomes:
            outcomes = read_outcome_records(args.outcomes)
        print(f"wrote {write_html(records, args.html, cfg, outcomes, scores)}")
    return 0


def _reference(cfg: Any) -> dict[str, Any] | None:
    """The champion's training reference from the registry, or None when unavailable (the
    report then shows the score's drift without the reference histogram)."""
    from scorers.registry import Registry, default_root

    try:
        root = (str(cfg.resolve_path(cfg.model.registry)) if cfg.model.registry
                else default_root())
        return Registry(root).resolve(cfg.model.ref).reference
    except Exception:  # no registry here: the report is still useful without it
        return None


def write_html(records: Sequence[DriftRecord], out: str | Path, cfg: Any = None,
               outcomes: Sequence[OutcomeMetricsRecord] = (),
               scores: Sequence[float] | None = None) -> Path:
    """Write the self-contained HTML report (see ``stream.drift.report``): the champion's
    training reference comes from the registry, recent scores from the decisions topic."""
    from stream.drift.report import render_html

    page = render_html(records, reference=_reference(cfg) if cfg is not None else None,
                       recent_scores=scores, outcomes=outcomes)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _read_outcome_topic(bootstrap: str, topic: str, settings: Mapping[str, Any],
                        timeout: float) -> list[OutcomeMetricsRecord]:
    """The latest outcome metric records (none when the topic does not exist)."""
    try:
        return _read_latest(bootstrap, topic, 500, settings, timeout, decode_metrics)
    except StreamscoreError:
        return []


def read_outcome_records(path: str | Path) -> list[OutcomeMetricsRecord]:
    """The outcome metric records of a JSONL file (other lines skipped)."""
    import msgspec

    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        raise StreamscoreError(f"no outcome metric records at {path}") from None
    out = []
    for line in lines:
        try:
            out.append(decode_metrics(line))
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
    return out


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``drift`` to the top-level parser."""
    drift = sub.add_parser(
        "drift",
        help="drift statistics of a pipeline (report)",
        description="Drift windows published by the pipeline's monitor.",
    )
    kinds = drift.add_subparsers(dest="drift_command", metavar=COMMAND, parser_class=type(drift))
    kinds.required = True
    text = ("Print the latest drift windows (PSI, calibrated threshold, JS, KS, Wasserstein, "
            "missing rate per feature and for the score) and optionally plot PSI over time.")
    p = kinds.add_parser("report", help="latest drift windows as a table, PSI plot",
                         description=text)
    p.add_argument("--pipeline", required=True, type=pipeline_arg, metavar="PIPELINE",
                   help="pipeline name or YAML file")
    p.add_argument("--from-topic", action="store_true",
                   help="read the pipeline's drift topic instead of the local JSONL file")
    p.add_argument("--file", metavar="PATH",
                   help="JSONL file of drift records (default "
                        "$STREAMSCORE_HOME/drift/<pipeline>.jsonl)")
    p.add_argument("--last", type=positive_int, default=10, metavar="N",
                   help="number of latest windows to show (default 10)")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of PSI per feature over time")
    p.add_argument("--html", metavar="PATH",
                   help="write a self-contained HTML report (PSI timelines with alarms, "
                        "score vs training reference, decision mix, outcome metrics)")
    p.add_argument("--outcomes", metavar="PATH",
                   help="outcome metric records (JSON lines) to include in the HTML report "
                        "(written by 'streamscore outcomes --jsonl'; with --from-topic they "
                        "are read from <decisions topic>.outcome-metrics)")
    add_bootstrap(p, "with --from-topic: " + BOOTSTRAP_HELP)
    p.add_argument("--timeout", type=non_negative, default=10.0, metavar="S",
                   help="seconds to wait for the broker (default 10)")
    p.set_defaults(func=_report)
