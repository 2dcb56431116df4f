"""A real Prometheus scrapes a real running worker (``streamscore run``) on a real broker
and Redis: the names it exports are the ones the rules and the dashboard use, and a burst
of malformed input (``streamscore produce --bad-ratio``) fires the dead-letter alert.

Setup is the production one in miniature: synthetic data, a private copy of the fraud
Feast repo applied and materialized into Redis, a small model trained and promoted to
champion in a private registry, the pipeline's topics created, then the two CLI commands.
Redis is used through a user with exactly the ACL that deploy/README.md documents.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest
import yaml
from deploy_support import (
    ROOT,
    dashboard_exprs,
    defined_sample_names,
    firing,
    free_port,
    get_json,
    rule_exprs,
    running_prometheus,
    scraped_names,
    target_up,
    used_metric_names,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Families a healthy worker creates only when something goes wrong (or on a promotion).
ONLY_ON_FAULTS = {
    "streamscore_degraded_total",
    "streamscore_online_store_faults_total",
    "streamscore_backpressure_pauses_total",
    "streamscore_model_reloads_total",
    "streamscore_drift_page_hinkley_alarms_total",
}


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _acl_user(redis_url: str, project: str) -> tuple[str, Callable[[], None]]:
    """A Redis user with exactly the ACL of deploy/README.md (limited to ``project``), so
    the whole setup and the worker prove the documented permissions are enough. Falls
    back to ``redis_url`` itself where users cannot be created (no ACL admin rights)."""
    import redis

    line = re.search(r"^ACL SETUSER streamscore (.+)$", (ROOT / "deploy/README.md").read_text(),
                     re.M)
    assert line, "deploy/README.md lost its Redis ACL line"
    user, password = f"acl_{project}", f"pw-{project}"
    rules = line.group(1).replace("streamscore_fraud", project).replace(">PASSWORD",
                                                                        f">{password}")
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.execute_command("ACL", "SETUSER", user, "reset", *rules.split())
    except redis.RedisError:
        admin.close()
        return redis_url, lambda: None
    url = urlparse(redis_url)
    netloc = f"{user}:{password}@{url.hostname}:{url.port or 6379}"

    def drop() -> None:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()

    return urlunparse(url._replace(netloc=netloc)), drop


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, bootstrap: str, redis_url: str,
           kafka_client_settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from features.materialize import apply_repo, materialize_repo
    from features.repo import delete_project_keys, prepare_repo
    from features.synthetic import generate
    from scorers.registry import Registry
    from scorers.train import TrainOptions, train_and_register
    from stream.kafka.admin import ensure_topics

    tmp = tmp_path_factory.mktemp("deploy-worker")
    name = f"dw{os.getpid():x}{int(time.time() * 1000) % 100000:x}"
    data = tmp / "data"
    generate("fraud", data, rows=3000, cards=400, merchants=80, seed=3, progress=False)
    acl_url, drop_user = _acl_user(redis_url, name)
    repo = prepare_repo("fraud", tmp / "repo", project=name, redis_url=acl_url,
                        data_dir=data, registry_path=tmp / "feast_registry.db")
    try:
        apply_repo(repo)
        materialize_repo(repo, progress=False)
        train_and_register(pipeline="fraud", data=data / "training.parquet",
                           registry=Registry(tmp / "models"), promote=["champion"],
                           options=TrainOptions(num_trees=15, threads=1, progress=False))
        topics = {"input": f"{name}.in", "decisions": f"{name}.decisions",
                  "dead_letter": f"{name}.dlq", "drift": f"{name}.drift"}
        ensure_topics(bootstrap, list(topics.values()), partitions=2,
                      settings=kafka_client_settings)
        port = free_port()
        pipeline = yaml.safe_load((ROOT / "pipelines" / "fraud.yaml").read_text())
        pipeline["kafka"].update(bootstrap_servers=bootstrap, group_id=name,
                                 settings={"client.id": name, **kafka_client_settings})
        pipeline["topics"] = {**topics, "partitions": 2}
        pipeline["features"].update(repo=str(repo), redis_url=acl_url)
        pipeline["model"]["registry"] = str(tmp / "models")
        # Small windows so drift gauges exist after a few hundred events.
        pipeline["drift"] = {"window_events": 200, "window_seconds": 2, "sub_windows": 1}
        pipeline["metrics"] = {"host": "127.0.0.1", "port": port}
        path = tmp / "fraud.yaml"
        path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
        env = {**os.environ, "STREAMSCORE_HOME": str(tmp / "home")}
        log = (tmp / "worker.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "run", "--pipeline", str(path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 120
            while not _http_ok(f"http://127.0.0.1:{port}/readyz"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("worker did not become ready:\n"
                                + (tmp / "worker.log").read_text()[-3000:])
                time.sleep(0.5)
            yield {"port": port, "pipeline": path, "env": env, "tmp": tmp,
                   "log": tmp / "worker.log"}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    finally:
        delete_project_keys(redis_url, name)
        drop_user()


def _value(base: str, query: str) -> float:
    result = get_json(f"{base}/api/v1/query?query={urllib.parse.quote(query)}")["data"]
    return float(result["result"][0]["value"][1]) if result["result"] else 0.0


def _produce(worker: dict[str, Any], events: int, seed: int) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stream.cli", "produce", "--pipeline", str(worker["pipeline"]),
         "--events", str(events), "--rate", "100", "--bad-ratio", "0.3", "--seed", str(seed)],
        capture_output=True, text=True, env=worker["env"], cwd=ROOT, timeout=120,
    )
    assert out.returncode == 0, out.stderr


def test_worker_metrics_and_dead_letter_alert(worker: dict[str, Any], prometheus_bin: str,
                                              tmp_path: Path) -> None:
    try:
        _check_worker(worker, prometheus_bin, tmp_path)
    except pytest.fail.Exception as exc:
        log = worker["log"].read_text()[-4000:]
        pytest.fail(f"{exc}\n--- worker log (tail) ---\n{log}")


def _check_worker(worker: dict[str, Any], prometheus_bin: str, tmp_path: Path) -> None:
    port = worker["port"]
    assert _http_ok(f"http://127.0.0.1:{port}/healthz")
    with running_prometheus(prometheus_bin, tmp_path, f"127.0.0.1:{port}") as base:
        wait_for(lambda: target_up(base), 20, "the worker was not scraped")
        # Partitions assigned before any input, so the worker scores as events arrive.
        wait_for(lambda: _value(base, "sum(streamscore_assigned_partitions)") > 0, 60,
                 "the worker was never assigned partitions")
        # 30% malformed input in two rounds: the first creates the dead-letter series, the
        # second makes them rise across scrapes (a counter seen once has no rate).
        _produce(worker, 100, seed=5)
        wait_for(lambda: _value(base, "sum(streamscore_dead_letters_total)") > 0, 60,
                 "no dead letters were scraped")
        _produce(worker, 400, seed=6)
        deadline = time.monotonic() + 60
        while not (alert := firing(base, "StreamscoreDeadLetterRate")):
            if time.monotonic() > deadline:
                dl = _value(base, "sum(rate(streamscore_dead_letters_total[5m]))")
                ev = _value(base, "sum(rate(streamscore_events_total[5m]))")
                raw = _value(base, "sum(streamscore_dead_letters_total)")
                pytest.fail(f"StreamscoreDeadLetterRate did not fire on malformed input: "
                            f"dead letters {raw:g} total, {dl:.3f}/s vs events {ev:.3f}/s")
            time.sleep(0.5)
        assert alert[0]["labels"]["pipeline"] == "fraud"
        assert not firing(base, "StreamscoreWorkerDown")
        # Drift gauges appear once a window has closed (2 s windows here) and been scraped.
        scraped = wait_for(lambda: (lambda n: n if "streamscore_drift_psi" in n else None)(
            scraped_names(base)), 20, "no drift window was exported")

    defined = defined_sample_names()
    assert scraped <= defined, f"the worker exports undeclared names: {scraped - defined}"
    used = set(used_metric_names(rule_exprs())) | set(used_metric_names(dashboard_exprs()))
    # The outcome metrics come from the `streamscore outcomes` process, not the worker
    # (tests/stream/kafka/test_outcomes_service.py scrapes them there).
    missing = {n for n in used - scraped - ONLY_ON_FAULTS
               if not n.startswith("streamscore_outcome")}
    assert not missing, f"rules/dashboard use names the running worker did not export: " \
                        f"{sorted(missing)}"
