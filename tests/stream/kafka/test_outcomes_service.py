"""``streamscore outcomes`` and ``model compare`` on a real broker: decisions (champion and
shadow challenger scores) and outcomes (late, duplicate, unknown, malformed among them)
produced to topics; the published metrics per model version equal scikit-learn's on the
joined pairs, Prometheus shows them, and the better challenger is picked."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import numpy as np
import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import generate_latest
from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

from schemas.decisions import Decision
from schemas.outcomes import Outcome, decode_metrics
from stream.cli import main
from stream.drift.outcome_stream import OutcomeMetricsExporter
from stream.drift.outcomes import OutcomeConfig
from stream.kafka.outcomes import OutcomeService

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_790_000_000.0


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, v)
    assert p.flush(30) == 0


def _stream(n: int, seed: int = 0):
    """Labels from a latent risk; the challenger (version 4) sees it with less noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.5 * z - 3.0)))).astype(int)
    champ = 1 / (1 + np.exp(-(2.5 * (z + 0.9 * rng.normal(size=n)) - 3.0)))
    chall = 1 / (1 + np.exp(-(2.5 * (z + 0.4 * rng.normal(size=n)) - 3.0)))
    return y, champ, chall


def _decisions(n: int, champ, chall) -> list[bytes]:
    enc = msgspec.json.Encoder()
    return [enc.encode(Decision(
        event_id=f"e{i}", pipeline="fraud", key=f"c{i % 97}", outcome="approve",
        score=float(champ[i]), model_name="fraud", model_version="3", model_sha256="a" * 64,
        decided_at=T0 + i, challenger_version="fraud@4", challenger_score=float(chall[i])))
        for i in range(n)]


def _outcomes(y) -> list[bytes]:
    enc = msgspec.json.Encoder()
    good = [enc.encode(Outcome(event_id=f"e{i}", label=int(y[i]), outcome_time=T0 + i + 3600))
            for i in range(len(y))]
    extra = [good[0], good[1],  # duplicates
             enc.encode(Outcome(event_id="unknown", label=1, outcome_time=T0)),
             b'{"event_id": "e5"', b'{"event_id": "e6", "label": 7, "outcome_time": 1}',
             enc.encode(Outcome(event_id=f"e{len(y)}", label=1,  # joins after the horizon
                                outcome_time=T0 + len(y) + 10 * 86400))]
    return good + extra


@pytest.fixture
def pipeline_file(tmp_path, make_topic) -> tuple[Path, str]:
    decisions = make_topic("decisions")
    make_topic("decisions.outcomes")  # <unique>-decisions.outcomes
    text = (ROOT / "pipelines/fraud.yaml").read_text()
    text = text.replace("decisions: fraud.decisions", f"decisions: {decisions}")
    text = text.replace("repo: ../features/repos/fraud", f"repo: {ROOT}/features/repos/fraud")
    path = tmp_path / "fraud.yaml"
    path.write_text(text)
    return path, decisions


def test_outcomes_join_publish_and_export(bootstrap, pipeline_file, make_topic):
    _, decisions = pipeline_file
    n = 3000
    y, champ, chall = _stream(n)
    _produce(bootstrap, decisions, _decisions(n + 1, np.r_[champ, 0.5], np.r_[chall, 0.5]))
    _produce(bootstrap, f"{decisions}.outcomes", _outcomes(y))
    metrics_topic = make_topic("metrics")
    exporter = OutcomeMetricsExporter("fraud")
    service = OutcomeService(
        pipeline="fraud", bootstrap=bootstrap, decisions_topic=decisions,
        outcomes_topic=f"{decisions}.outcomes", metrics_topic=metrics_topic,
        config=OutcomeConfig(horizon_seconds=86400.0, thresholds=(0.35, 0.8)),
        exporter=exporter, interval=float("inf"), replay_seconds=3600.0, early_seconds=0.5)
    service.assign()
    deadline = time.monotonic() + 60
    while service.joiner.counts.joined < n and time.monotonic() < deadline:
        service.poll(timeout=0.5)
    time.sleep(0.6)
    service.poll(timeout=0.5)  # the unknown outcome leaves the early buffer
    records = service.publish()
    service.close()
    c = service.joiner.counts
    assert (c.joined, c.duplicate, c.late, c.unmatched, service.invalid) == (n, 2, 1, 1, 2)
    assert {r.model_version: r.role for r in records} == {"3": "champion",
                                                          "fraud@4": "challenger"}
    for r in records:
        s = champ if r.role == "champion" else chall
        assert r.n == n and r.auc == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        assert r.brier == pytest.approx(brier_score_loss(y, s), abs=1e-9)
        for t, p, q in zip(r.thresholds, r.precision, r.recall, strict=True):
            assert p == pytest.approx(precision_score(y, s >= t, zero_division=0), abs=1e-9)
            assert q == pytest.approx(recall_score(y, s >= t), abs=1e-9)
        assert r.delay_p50 == pytest.approx(3600.0)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": metrics_topic,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([metrics_topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < deadline:
        got += [decode_metrics(m.value()) for m in consumer.consume(10, 1.0) if not m.error()]
    consumer.close()
    assert sorted(got, key=lambda r: r.model_version) == sorted(
        records, key=lambda r: r.model_version)
    text = generate_latest(exporter.registry).decode()
    auc = next(r.auc for r in records if r.role == "challenger")
    assert (f'streamscore_outcome_auc{{model_version="fraud@4",pipeline="fraud",'
            f'role="challenger"}} {auc!r}') in text
    assert 'streamscore_outcomes_total{pipeline="fraud",result="duplicate"} 2.0' in text


def test_model_compare_picks_the_better_challenger(bootstrap, pipeline_file, capsys,
                                                   tmp_path):
    path, decisions = pipeline_file
    y, champ, chall = _stream(4000, seed=1)
    _produce(bootstrap, decisions, _decisions(4000, champ, chall))
    _produce(bootstrap, f"{decisions}.outcomes", _outcomes(y)[:4000])
    html = tmp_path / "compare.html"
    code = main(["model", "compare", "--pipeline", str(path), "--bootstrap-servers",
                 bootstrap, "--horizon", "86400", "--replay", "3600", "--timeout", "60",
                 "--html", str(html)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4000 joined" in out and "better: challenger fraud@4" in out
    assert "<script" not in html.read_text() and "DeLong" in html.read_text()


def test_outcomes_command_writes_metric_records(bootstrap, pipeline_file, make_topic, capsys,
                                                tmp_path):
    path, decisions = pipeline_file
    make_topic("decisions.outcome-metrics")
    y, champ, chall = _stream(500, seed=2)
    _produce(bootstrap, decisions, _decisions(500, champ, chall))
    _produce(bootstrap, f"{decisions}.outcomes", _outcomes(y)[:500])
    jsonl = tmp_path / "outcomes.jsonl"
    code = main(["outcomes", "--pipeline", str(path), "--bootstrap-servers", bootstrap,
                 "--horizon", "86400", "--replay", "3600", "--duration", "8",
                 "--interval", "2", "--jsonl", str(jsonl)])
    out = capsys.readouterr().out
    assert code == 0 and "fraud@4 (challenger): 500 joined pairs" in out, out
    last = [decode_metrics(line) for line in jsonl.read_bytes().splitlines()][-2:]
    assert {r.model_version for r in last} == {"3", "fraud@4"}
    assert all(r.n == 500 and r.counts.joined == 500 for r in last)
