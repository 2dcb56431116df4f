"""Helpers of the deploy checks: file lists, PromQL of rules and dashboard, metric names,
a throwaway Prometheus server.

The metric names come from the worker's own source: a ``WorkerMetrics`` and a
``DriftMonitor`` are built on a private registry and every family they register is
expanded into the sample names Prometheus sees (``_total``, ``_bucket``, ``_info``...).
"""

from __future__ import annotations

import json
import re
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

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_BASE = DEPLOY / "k8s" / "base"
K8S_OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "streamscore.json"
COMPOSE = DEPLOY / "compose.yaml"

METRIC_TOKEN = re.compile(r"\bstreamscore_[a-z0-9_]+\b")


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def json_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.json"))


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _sample_names(family: Any) -> set[str]:
    name, kind = family.name, family.type
    if kind == "counter":
        return {f"{name}_total", f"{name}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "info":
        return {f"{name}_info"}
    return {name}


def defined_sample_names() -> set[str]:
    """Every sample name a worker can export (``stream.metrics``, ``stream.drift.monitor``)."""
    from prometheus_client import CollectorRegistry

    from stream.config import DriftConfig
    from stream.drift.monitor import DriftMonitor
    from stream.drift.outcome_stream import OutcomeMetricsExporter
    from stream.metrics import WorkerMetrics

    registry = CollectorRegistry()
    WorkerMetrics("deploycheck", registry=registry)
    reference = {
        "n": 4,
        "features": {"x": {"kind": "numeric", "edges": [0.0, 1.0, 2.0], "counts": [2, 2],
                           "missing": 0}},
        "score": {"edges": [0.0, 0.5, 1.0], "counts": [2, 2]},
    }
    DriftMonitor(reference, ["x"], DriftConfig(), "deploycheck", registry=registry)
    OutcomeMetricsExporter("deploycheck", registry=registry)  # `streamscore outcomes`
    names: set[str] = set()
    for family in registry.collect():
        names |= _sample_names(family)
    return names


def rule_exprs() -> list[tuple[str, str]]:
    """(alert name, expr) of every rule in alerts.yaml."""
    doc = yaml.safe_load(ALERTS.read_text())
    return [(r.get("alert") or r.get("record"), r["expr"])
            for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard, template queries included."""

    dash = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel.get("title", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            out.append((f"variable {var['name']}",
                        query["query"] if isinstance(query, dict) else query))
    return out


def used_metric_names(exprs: list[tuple[str, str]]) -> dict[str, set[str]]:
    """metric sample name -> the rules/panels using it."""
    used: dict[str, set[str]] = {}
    for where, expr in exprs:
        for name in METRIC_TOKEN.findall(expr):
            used.setdefault(name, set()).add(where)
    return used


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


PROMETHEUS_RULE = K8S_BASE / "prometheusrule.yaml"
_RULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml for the Prometheus Operator; do not edit.
# Regenerate: .venv/bin/python tests/deploy/deploy_support.py (tests/deploy checks sync).
"""


def prometheus_rule_text() -> str:
    """deploy/k8s/base/prometheusrule.yaml as it must read: the alert groups, wrapped."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "streamscore", "labels": {"app.kubernetes.io/name": "streamscore"}},
        "spec": {"groups": groups},
    }
    return _RULE_HEADER + yaml.safe_dump(resource, sort_keys=False, width=100)


if __name__ == "__main__":
    PROMETHEUS_RULE.write_text(prometheus_rule_text())
    print(f"wrote {PROMETHEUS_RULE}")
