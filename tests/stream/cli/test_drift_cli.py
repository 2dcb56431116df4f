"""``streamscore drift report`` from the monitor's JSONL file and from a real broker's
drift topic; drift records encode, publish and read back unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from schemas.drift import decode_drift, encode_drift
from scorers.refstats import reference_stats
from stream.cli import main
from stream.cli.drift import read_jsonl_records, read_topic_records
from stream.config import DriftConfig
from stream.drift.monitor import DriftMonitor, default_jsonl_path

ROOT = Path(__file__).resolve().parents[3]
NAMES = ["amount", "hour", "merchant_category"]


def _records(tmp_path: Path, windows: int = 4, jsonl: Path | None = None):
    rng = np.random.default_rng(0)

    def draw(k: int, shift: float = 0.0) -> np.ndarray:
        return np.column_stack([rng.lognormal(3 + shift, 1, k), rng.integers(0, 24, k),
                                rng.integers(0, 6, k)]).astype(float)

    ref = reference_stats(draw(20_000), NAMES, rng.random(20_000),
                          categorical=["merchant_category"])
    mon = DriftMonitor(ref, NAMES, DriftConfig(window_events=500, window_seconds=0,
                                               sub_windows=1),
                       "fraud", {"name": "fraud", "version": 1, "sha256": "c" * 64},
                       registry=None, jsonl_path=jsonl)
    out = []
    for i in range(windows):
        out += map(decode_drift, mon.update(
            draw(500, shift=0.5 * (i == windows - 1)), rng.random(500),
            np.zeros(500, dtype=np.int8), now=1_790_000_000.0 + 60 * i))
    return out


def test_report_from_jsonl_prints_tables_and_plots(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path))
    path = default_jsonl_path("fraud")
    records = _records(tmp_path, jsonl=path)
    assert read_jsonl_records(path) == records
    with path.open("ab") as fh:
        fh.write(b'{"torn": ')  # a half-written last line is skipped, not fatal
    png = tmp_path / "psi.png"
    code = main(["drift", "report", "--pipeline", str(ROOT / "pipelines/fraud.yaml"),
                 "--last", "3", "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 0
    assert "merchant_category" in out and "amount" in out and "ALARM" in out
    assert png.stat().st_size > 5_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert read_jsonl_records(path, last=3) == records[-3:]


def test_plot_without_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    jsonl = tmp_path / "drift.jsonl"
    _records(tmp_path, windows=1, jsonl=jsonl)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were missing
    code = main(["drift", "report", "--pipeline", str(ROOT / "pipelines/fraud.yaml"),
                 "--file", str(jsonl), "--plot", str(tmp_path / "psi.png")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "matplotlib" in err and "pip install 'streamscore[bench]'" in err


def test_report_errors_are_one_line(tmp_path, capsys):
    fraud = str(ROOT / "pipelines/fraud.yaml")
    code = main(["drift", "report", "--pipeline", fraud, "--file", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "no drift records" in err
    assert main(["drift", "report", "--pipeline", str(tmp_path / "x.yaml")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["drift", "report", "--help"])
    assert exc.value.code == 0 and "--from-topic" in capsys.readouterr().out


@pytest.mark.integration
def test_records_publish_and_read_back_from_a_real_broker(
    tmp_path, bootstrap, make_topic, capsys
):
    from confluent_kafka import Producer

    topic = make_topic("drift", partitions=2)
    records = _records(tmp_path, windows=5)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    acked = []
    for r in records:
        producer.produce(topic, encode_drift(r), key=r.pipeline.encode(),
                         on_delivery=lambda err, msg: acked.append(err is None))
    assert producer.flush(15) == 0 and acked == [True] * len(records)

    assert read_topic_records(bootstrap, topic, last=10, timeout=15) == records
    assert read_topic_records(bootstrap, topic, last=2, timeout=15) == records[-2:]

    pipeline = yaml.safe_load((ROOT / "pipelines/fraud.yaml").read_text())
    pipeline["kafka"]["bootstrap_servers"] = bootstrap
    pipeline["topics"]["drift"] = topic
    (tmp_path / "pipelines").mkdir()
    path = tmp_path / "pipelines/fraud.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    assert main(["drift", "report", "--pipeline", str(path), "--from-topic"]) == 0
    out = capsys.readouterr().out
    assert "drift windows: fraud" in out and "ALARM" in out

    # --html adds the champion's recent scores from the decisions topic to the page.
    from msgspec.json import encode

    from schemas.decisions import Decision
    from schemas.outcomes import OutcomeMetricsRecord
    decisions = make_topic("decisions")
    for i in range(300):
        producer.produce(decisions, encode(Decision(
            event_id=f"e{i}", pipeline="fraud", key="k", outcome="approve", score=i / 300,
            model_name="fraud", model_version="1", model_sha256="c" * 64)))
    producer.produce(decisions, b"not a decision")
    metrics = make_topic("decisions.outcome-metrics")  # <decisions topic>.outcome-metrics
    for v, auc in (("1", 0.81), ("2", 0.86)):
        producer.produce(metrics, encode(OutcomeMetricsRecord(
            pipeline="fraud", model_version=v, role="champion" if v == "1" else "challenger",
            at=1_790_000_000.0, n=900, positives=40, auc=auc, thresholds=[0.5],
            precision=[0.5], recall=[0.4], brier=0.04, reliability_counts=[900],
            reliability_true=[0.04], reliability_pred=[0.05], delay_mean=1.0, delay_p50=1.0,
            delay_p90=1.0, delay_max=1.0)))
    assert producer.flush(15) == 0
    pipeline["topics"]["decisions"] = decisions
    path.write_text(yaml.safe_dump(pipeline))
    page = tmp_path / "report.html"
    assert main(["drift", "report", "--pipeline", str(path), "--from-topic",
                 "--html", str(page)]) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    text = page.read_text()
    assert "300 recent scores" in text and "Outcomes joined back" in text
    assert "0.8600" in text
    missing = tmp_path / "pipelines/missing.yaml"
    pipeline["topics"]["drift"] = topic + "-absent"
    missing.write_text(yaml.safe_dump(pipeline))
    assert main(["drift", "report", "--pipeline", str(missing), "--from-topic",
                 "--timeout", "5"]) == 1
    assert "does not exist" in capsys.readouterr().err
