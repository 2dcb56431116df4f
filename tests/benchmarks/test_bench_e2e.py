"""The end-to-end benchmark harness on the embedded broker and the real Redis.

One tiny sweep (seconds of load) runs the plain hop, the streamscore worker and the
naive stack on the same events and checks that every event is accounted for (one
decision per good event, one dead letter per malformed one) and that the report files
are written. Smaller tests pin the load generator (open-loop schedule, scheduled Kafka
timestamps, shares of unknown and malformed events) and the HDR statistics.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from benchmarks.loadgen import EventFactory, event_id_of, send_open_loop
from benchmarks.measure import Collector, _split, latency_stats

pytestmark = pytest.mark.integration


def _factory(ws: Any, **kw: Any) -> EventFactory:
    return EventFactory.from_data_dir("fraud", ws.data_dir, **kw)


def test_events_are_hot_skewed_with_unknowns_and_malformed(workspace: Any) -> None:
    from schemas.registry import decode_batch

    f = _factory(workspace, unknown_share=0.1, malformed_share=0.1, zipf_s=1.2, seed=3)
    batch = f.make(4000, "p.")
    decoded = decode_batch("fraud_transaction", batch.payloads)
    bad = {r.index for r in decoded.rejected}
    # exactly the malformed ones are rejected by the worker's own validation
    assert bad == set(np.flatnonzero(batch.kind == 2).tolist())
    assert 0.07 < batch.malformed / len(batch) < 0.13
    assert all(event_id_of(batch.payloads[i]) == batch.ids[i] for i in range(len(batch)))
    cards = np.array([msgspec.json.decode(batch.payloads[i])["card_id"]
                      for i in range(len(batch)) if batch.kind[i] == 0])
    _, counts = np.unique(cards, return_counts=True)
    top = np.sort(counts)[::-1]
    # Zipf: the hottest key alone carries far more than a uniform share
    assert top[0] > 20 * len(cards) / len(f.entities)
    unknown = [msgspec.json.decode(batch.payloads[i])["card_id"]
               for i in np.flatnonzero(batch.kind == 1)]
    assert unknown and not set(unknown) & set(f.entities.tolist())


def test_open_loop_schedule_and_timestamps(
    workspace: Any, bootstrap: str, make_topic: Callable[..., str]
) -> None:
    from confluent_kafka import Producer

    topic = make_topic("hop", partitions=2)
    f = _factory(workspace, unknown_share=0.0, malformed_share=0.0)
    batch = f.make(400, "h.")
    collector = Collector(bootstrap, [topic], mode="raw")
    exp = collector.expect("h.", len(batch))
    collector.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    try:
        report = send_open_loop(producer, topic, batch.keys, batch.payloads, 400.0)
        assert collector.wait("h.", timeout=30)
    finally:
        collector.stop()
    assert report.delivered == 400 and report.errors == 0
    assert 0.8 < report.rate_accuracy < 1.25
    # each message carries its scheduled send time (ms) as its Kafka timestamp
    np.testing.assert_allclose(exp.msg_ts, np.floor(report.scheduled * 1e3) / 1e3, atol=1e-3)
    assert np.all(exp.recv >= report.scheduled)
    assert exp.duplicates == 0 and collector.unmatched == 0


def test_hdr_percentiles_and_id_split() -> None:
    stats = latency_stats(np.arange(1, 10_001, dtype=np.float64) * 1000.0)  # 1..10000 ms
    assert stats["count"] == 10_000
    assert stats["p50"] == pytest.approx(5000, rel=2e-3)
    assert stats["p99"] == pytest.approx(9900, rel=2e-3)
    assert stats["max"] == pytest.approx(10_000, rel=2e-3)
    assert _split("b1.worker.s0r123") == ("b1.worker.s0r", 123)
    assert _split("nodigits")[1] == -1


def test_tiny_sweep_accounts_for_every_event_and_writes_reports(
    workspace: Any, bootstrap: str, broker_kind: str, redis_url: str, tmp_path: Path,
) -> None:
    from benchmarks.bench_e2e import add_arguments, run_sweep
    from benchmarks.report import write_reports

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([
        "--stacks", "hop,worker,naive", "--rates", "40", "--duration", "1",
        "--drain-events", "200", "--drain-batch", "16",
        "--workspace", str(workspace.root), "--size", "tiny",
        "--unknown-share", "0.3", "--malformed-share", "0.2", "--budget-ms", "60000",
        "--out", str(tmp_path / "out"), "--startup-timeout", "60",
    ])
    args.warmup_events = 20
    args.quiet = True
    result = run_sweep(args, bootstrap=bootstrap, broker_label=f"embedded {broker_kind}",
                       redis_url=redis_url)
    assert result["complete"], result["notes"]
    for name in ("hop", "worker", "naive"):
        stack = result["stacks"][name]
        assert stack["error"] is None
        assert stack["steps"], name
        for step in stack["steps"]:
            acc = step["accounting"]
            assert acc["missing"] == 0 and acc["misrouted"] == 0, (name, acc)
            if name != "hop":
                assert acc["decisions"] == acc["expected_decisions"], (name, acc)
                assert acc["dead_letters"] == acc["expected_dead_letters"], (name, acc)
                assert acc["dead_letters"] > 0  # the dead-letter path was exercised
            assert step["e2e"]["p50"] > 0
    for name in ("worker", "naive"):
        drain = result["stacks"][name]["drain"]
        assert drain["complete"] and drain["accounted"] == drain["events"]
    # the worker stamps its stages; the harness breaks the time down with them
    assert result["stacks"]["worker"]["breakdown"]["mean_ms"]["features"] > 0
    # ... and reads the worker's own batch latency histogram from its /metrics
    assert result["stacks"]["worker"]["steps"][0]["worker_ack"]["batches"] > 0
    # ... and its per-batch stage times, the drift update among them
    worker_step = result["stacks"]["worker"]["steps"][0]
    stages = worker_step["stage_per_batch_ms"]
    assert stages["score"] > 0 and stages["drift"] > 0, stages
    assert worker_step["drift_over_score"] == pytest.approx(
        stages["drift"] / stages["score"], rel=1e-2, abs=1e-4)
    assert result["stacks"]["worker"]["breakdown"]["mean_ms"]["drift"] >= 0
    assert any(k.startswith("worker_drift_over_score_at_") for k in result["summary"])
    # ... also over the drain, whose large batches are what the 5% target is about
    drain = result["stacks"]["worker"]["drain"]
    assert drain["stage_per_batch_ms"]["score"] > 0 and drain["stage_per_batch_ms"]["drift"] > 0
    assert result["summary"]["worker_drift_over_score_in_drain"] == drain["drift_over_score"]
    # ... at the batch size asked for (--drain-batch 16: 200 events in >= 13 batches; the
    # pipeline file's 1,024 would give ~4 batches of ~50, adaptive from 64)
    assert drain["events_per_batch"] is not None and drain["events_per_batch"] <= 16.0, drain
    assert result["summary"]["worker_drain_events_per_batch"] == drain["events_per_batch"]
    assert result["settings"]["worker_batch"] == 16
    assert "naive_drift_over_score_in_drain" not in result["summary"]
    for name in ("hop", "naive"):  # no metrics: nothing invented
        assert "stage_per_batch_ms" not in result["stacks"][name]["steps"][0] or \
            result["stacks"][name]["steps"][0]["stage_per_batch_ms"] == {}
    # unknown cards come back flagged: degraded decisions are counted, never hidden
    degraded = result["stacks"]["worker"]["steps"][0]["degraded"]
    assert degraded["decisions"] >= 1 and degraded["reasons"]
    assert result["summary"]["every_event_accounted"] is True

    files = write_reports(result, tmp_path / "out")
    names = {p.name for p in files}
    assert {"e2e.json", "e2e.md", "e2e_latency_vs_rate.png", "e2e_stage_breakdown.png",
            "e2e_cdf.png"} <= names
    assert all(p.stat().st_size > 0 for p in files)
    saved = json.loads((tmp_path / "out" / "e2e.json").read_text())
    assert saved["machine"]["cores"] and saved["command"]
    md = (tmp_path / "out" / "e2e.md").read_text()
    assert "| worker |" in md
    assert "## Worker stage time per batch" in md and "drift / score" in md


def test_stage_means_without_a_drift_stage() -> None:
    """An older worker (or Faust) reports no drift stage: no ratio, no error."""
    from benchmarks.sweep import stage_means, stage_totals

    before = {"score": (1.0, 10.0)}
    after = {"score": (1.5, 20.0), "decode": (0.2, 10.0)}
    got = stage_means(before, after)
    assert got == {"stage_per_batch_ms": {"score": 50.0, "decode": 20.0},
                   "drift_over_score": None}
    got = stage_means(after, {**after, "drift": (0.01, 2.0), "score": (2.0, 30.0)})
    assert got["stage_per_batch_ms"]["drift"] == 5.0 and got["drift_over_score"] == 0.1
    assert stage_totals(object()) == {}  # a stack without metrics ports


def test_worker_stack_passes_the_batch_size(tmp_path: Path) -> None:
    """--drain-batch reaches the worker's command line (and nothing when not given)."""
    from benchmarks.stacks import worker_stack

    topics = {"input": "i", "decisions": "d", "dead_letter": "x"}
    stack = worker_stack(tmp_path / "p.yaml", topics, tmp_path, batch=512)
    assert stack.cmd[-4:] == ["--pipeline", str(tmp_path / "p.yaml"), "--batch", "512"]
    assert "--batch" not in worker_stack(tmp_path / "p.yaml", topics, tmp_path).cmd


def test_fixed_size_model_is_trained_once_with_exactly_that_many_trees(workspace: Any) -> None:
    """--model-trees: a model of N trees (no early stopping) beside the champion, reused."""
    from benchmarks.bench_e2e import fixed_size_model

    ws = fixed_size_model(workspace, 7)
    assert ws.model_ref == "fraud@trees7" and ws.model_path != workspace.model_path
    assert ws.model_path.read_text().count("\nTree=") == 7
    again = fixed_size_model(workspace, 7)
    assert again.model_path == ws.model_path  # not trained again
    assert workspace.model_ref == "fraud@champion"  # the champion is untouched
