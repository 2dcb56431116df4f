"""Prometheus side of deploy/: promtool checks, rule unit tests, and a real Prometheus
server on loopback that scrapes a worker's /metrics and fires an alert.

The live test scrapes the worker's own metrics endpoint (``stream.metrics.WorkerMetrics``
behind ``stream.metrics.HealthServer``, the classes ``streamscore run`` serves) fed with a
burst of dead letters; ``test_worker_scrape.py`` does the same with a full running worker.
The rules are a test copy with ``for: 0s`` and 1 s intervals, so the alert fires in
seconds instead of minutes; the expressions are the shipped ones.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    ALERTS,
    PROM_CONFIG,
    firing,
    running_prometheus,
    scraped_names,
    target_up,
    wait_for,
)

HERE = Path(__file__).parent


def test_promtool_check_config(promtool: str) -> None:
    out = subprocess.run([promtool, "check", "config", str(PROM_CONFIG)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_rules(promtool: str) -> None:
    out = subprocess.run([promtool, "check", "rules", str(ALERTS)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "14 rules found" in out.stdout


def test_promtool_rule_unit_tests(promtool: str, tmp_path: Path) -> None:
    """Every alert fires on synthetic series that break its condition (and quiet ones
    stay quiet); annotations are stripped from the copy so cases compare labels only."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    cases = (HERE / "alerts_test.yaml").read_text().replace("  - RULES", "  - rules.yaml")
    (tmp_path / "alerts_test.yaml").write_text(cases)
    tested = {t["alertname"] for case in yaml.safe_load(cases)["tests"]
              for t in case["alert_rule_test"]}
    assert tested == {r["alert"] for g in rules["groups"] for r in g["rules"]}
    out = subprocess.run([promtool, "test", "rules", "alerts_test.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.integration
def test_dead_letter_burst_fires_alert(prometheus_bin: str, tmp_path: Path) -> None:
    from stream.metrics import HealthServer, WorkerMetrics

    metrics = WorkerMetrics("fraud")
    server = HealthServer(metrics, "127.0.0.1", 0).start()
    metrics.model_loaded = metrics.subscribed = True
    events = metrics.events.labels("fraud")
    bad = metrics.dead_letters.labels("fraud", "not_json")
    good = metrics.decisions.labels("fraud", "approve")
    try:
        with running_prometheus(prometheus_bin, tmp_path, f"127.0.0.1:{server.port}") as base:
            wait_for(lambda: target_up(base), 20, "the metrics endpoint was not scraped")
            assert not firing(base, "StreamscoreDeadLetterRate")
            # Healthy traffic first: no dead-letter alert.
            for _ in range(3):
                events.inc(100)
                good.inc(100)
                metrics.beat()
                time.sleep(1.0)
            assert not firing(base, "StreamscoreDeadLetterRate")
            # A burst of malformed input: 40% of events dead-lettered for a few scrapes.
            deadline = time.monotonic() + 30
            alert: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not alert:
                events.inc(100)
                good.inc(60)
                bad.inc(40)
                metrics.beat()
                time.sleep(0.5)
                alert = firing(base, "StreamscoreDeadLetterRate")
            assert alert, "StreamscoreDeadLetterRate did not fire on a dead-letter burst"
            assert alert[0]["labels"]["pipeline"] == "fraud"
            assert alert[0]["labels"]["severity"] == "warning"
            assert "dead-letter topic" in alert[0]["annotations"]["summary"]
            assert not firing(base, "StreamscoreWorkerDown")
            assert {"streamscore_events_total", "streamscore_dead_letters_total"} <= (
                scraped_names(base))
    finally:
        server.stop()
