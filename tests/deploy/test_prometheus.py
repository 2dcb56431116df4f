"""Prometheus side of deploy/: promtool checks, rule unit tests, and a real Prometheus
server on loopback that scrapes a worker's /metrics and fires an alert.

The live test scrapes the worker's own metrics endpoint (``stream.metrics.WorkerMetrics``
behind ``stream.metrics.HealthServer``, the classes ``streamscore run`` serves) fed with a
burst of dead letters; ``test_worker_scrape.py`` does the same with a full running worker.
The rules are a test copy with ``for: 0s`` and 1 s intervals, so the alert fires in
seconds instead of minutes; the expressions are the shipped ones.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import ALERTS, PROM_CONFIG

HERE = Path(__file__).parent


def test_promtool_check_config(promtool: str) -> None:
    out = subprocess.run([promtool, "check", "config", str(PROM_CONFIG)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_rules(promtool: str) -> None:
    out = subprocess.run([promtool, "check", "rules", str(ALERTS)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "10 rules found" in out.stdout


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


# --- a real Prometheus --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def fast_rules(dest: Path) -> Path:
    """The shipped rules with every ``for:`` set to 0s (expressions unchanged)."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    dest.write_text(yaml.safe_dump(rules))
    return dest


@contextmanager
def running_prometheus(prometheus_bin: str, workdir: Path, target: str) -> Iterator[str]:
    """A Prometheus on a free loopback port scraping ``target`` every second under
    job="streamscore"; yields its base URL and stops it afterwards."""
    fast_rules(workdir / "alerts.yaml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "scrape_timeout": "900ms"},
        "rule_files": ["alerts.yaml"],
        "scrape_configs": [{"job_name": "streamscore",
                            "static_configs": [{"targets": [target]}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [prometheus_bin, f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(base), 30, "Prometheus did not become ready", proc, workdir)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_for(cond: Callable[[], Any], timeout: float, what: str,
             proc: subprocess.Popen[bytes] | None = None, workdir: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.25)
    tail = ""
    if workdir is not None and (workdir / "prometheus.log").exists():
        tail = "\n" + (workdir / "prometheus.log").read_text()[-2000:]
    pytest.fail(f"{what} within {timeout:g} s{tail}")


def firing(base: str, alertname: str) -> list[dict[str, Any]]:
    alerts = get_json(f"{base}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname
            and a["state"] == "firing"]


def target_up(base: str) -> bool:
    targets = get_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
    return bool(targets) and all(t["health"] == "up" for t in targets)


def scraped_names(base: str) -> set[str]:
    names = get_json(f"{base}/api/v1/label/__name__/values")["data"]
    return {n for n in names if n.startswith("streamscore_")}


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
