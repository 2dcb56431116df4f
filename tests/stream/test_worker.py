"""The worker on a real broker and a real Redis: nothing lost, nothing invented.

One module-scoped scoring environment (synthetic fraud data, a Feast repo copy with its
own project in Redis, a small model in a temporary registry) is shared by every test;
each test has its own topics and consumer group.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer

from stream.config import load_pipeline
from stream.dev.load import produce_events
from stream.kafka.admin import ensure_topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    home: Path
    repo: Path
    registry: Path
    redis_url: str
    bootstrap: str
    settings: dict


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_url, bootstrap, kafka_client_settings):
    from features.materialize import apply_repo, materialize_repo
    from features.repo import delete_project_keys, prepare_repo
    from features.synthetic import generate
    from scorers.registry import Registry
    from scorers.train import TrainOptions, train_and_register

    home = tmp_path_factory.mktemp("worker")
    project = "w" + os.urandom(4).hex()
    data = home / "data" / "fraud"
    generate("fraud", data, cards=2000, merchants=200, rows=6000, progress=False)
    repo = prepare_repo("fraud", home / "repos", project=project, redis_url=redis_url,
                        data_dir=data)
    apply_repo(repo, redis_url)
    materialize_repo(repo, redis_url=redis_url, progress=False)
    registry = Registry(home / "models")
    train_and_register(pipeline="fraud", data=data / "training.parquet", registry=registry,
                       options=TrainOptions(num_trees=20, num_leaves=15, progress=False),
                       promote=["champion"])
    yield Env(home, repo, home / "models", redis_url, bootstrap, kafka_client_settings)
    delete_project_keys(redis_url, project)


def write_pipeline(env: Env, name: str, *, redis_url: str | None = None, **extra) -> Path:
    doc = yaml.safe_load((ROOT / "pipelines" / "fraud.yaml").read_text())
    doc["kafka"]["bootstrap_servers"] = env.bootstrap
    doc["kafka"]["group_id"] = f"{name}-g"
    doc["kafka"]["settings"] = {"client.id": name, **env.settings}
    doc["topics"] = {"input": f"{name}.in", "decisions": f"{name}.dec",
                     "dead_letter": f"{name}.dlq", "drift": f"{name}.drift", "partitions": 4}
    doc["features"]["repo"] = str(env.repo)
    doc["features"]["redis_url"] = redis_url or env.redis_url
    # The box is shared (load average 10 on 2 cores is common): a 20 ms Redis timeout
    # would make these tests about the machine. The degraded path has its own test.
    doc["features"]["timeout_ms"] = 2000
    doc["model"]["registry"] = str(env.registry)
    doc["metrics"] = {"port": 0}
    doc["budget_ms"] = 60_000  # the broker, not the worker, sets live latency here
    for key, value in extra.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    path = env.home / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    t = doc["topics"]
    ensure_topics(env.bootstrap, [t["input"], t["decisions"], t["dead_letter"], t["drift"]],
                  partitions=4, settings=env.settings)
    return path


def read_topic(bootstrap: str, topic: str, *, want: int, timeout: float = 60.0,
               read_committed: bool = False, settings: dict | None = None) -> list:
    """Every record of ``topic`` (stops once ``want`` arrived and 1 s passed quietly)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{os.urandom(4).hex()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed" if read_committed
                  else "read_uncommitted", **(settings or {})})
    c.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = c.consume(500, 0.2)
            got = [json.loads(m.value()) for m in msgs if m.error() is None]
            out += got
            if got:
                quiet_since = time.monotonic()
            elif len(out) >= want and time.monotonic() - quiet_since > 1.0:
                break
    finally:
        c.close()
    return out


class ThreadWorker:
    """A Worker running in a thread of the test process (stopped in ``stop``)."""

    def __init__(self, path: Path, **kw) -> None:
        from stream.worker import Worker

        self.worker = Worker(load_pipeline(path), metrics_port=0, **kw)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self.worker.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error


def produce(path: Path, n: int, *, rate: float = 0.0, bad_ratio: float = 0.0, seed: int = 1):
    config = load_pipeline(path)
    data = path.parent / "data" / "fraud"
    return produce_events(config, config.kafka.bootstrap_servers, n, rate, bad_ratio=bad_ratio,
                          seed=seed, progress=False, data_dir=data)


def expected_ids(n: int, seed: int, bad_ratio: float) -> tuple[set[str], int]:
    import numpy as np

    bad = np.random.default_rng(seed + 1).random(n) < bad_ratio
    return {f"{seed}-{j}" for j in range(n) if not bad[j]}, int(bad.sum())


def decide_all(path: Path, bootstrap: str, name: str, good: set[str], n_bad: int,
               **read: object) -> None:
    """Run a worker until every event is decided: exactly one decision per good event and
    one dead letter per bad one (``read``: read_topic's options)."""
    tw = ThreadWorker(path)
    try:
        decisions = read_topic(bootstrap, f"{name}.dec", want=len(good), **read)
        dead = read_topic(bootstrap, f"{name}.dlq", want=n_bad, **read)
    finally:
        tw.stop()
    ids = collections.Counter(d["event_id"] for d in decisions)
    assert set(ids) == good and max(ids.values()) == 1
    assert len(dead) == n_bad


def test_one_decision_per_good_event_one_dead_letter_per_bad(env, unique_name):
    path = write_pipeline(env, unique_name)
    n, ratio = 3000, 0.05
    counts = produce(path, n, bad_ratio=ratio)
    good_ids, n_bad = expected_ids(n, 1, ratio)
    assert counts == {"good": len(good_ids), "bad": n_bad}
    tw = ThreadWorker(path)
    try:
        decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=len(good_ids))
        dead = read_topic(env.bootstrap, f"{unique_name}.dlq", want=n_bad)
        port = tw.worker.port
        # Metrics are counted just after a batch's records are acked: the last batch's
        # decisions can be read before its count lands, so poll briefly.
        registry = tw.worker.metrics.registry
        deadline = time.monotonic() + 10
        while ((registry.get_sample_value("streamscore_events_total", {"pipeline": "fraud"})
                or 0) < n and time.monotonic() < deadline):
            time.sleep(0.1)
        events = registry.get_sample_value("streamscore_events_total", {"pipeline": "fraud"})
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status
    finally:
        tw.stop()
    ids = collections.Counter(d["event_id"] for d in decisions)
    assert set(ids) == good_ids and max(ids.values()) == 1  # exactly once on a clean run
    offsets = collections.Counter((d["partition"], d["offset"]) for d in dead)
    assert len(offsets) == n_bad and max(offsets.values()) == 1
    assert {d["error_code"] for d in dead} <= {"not_json", "missing_field", "wrong_type",
                                               "out_of_range", "unknown_schema_version"}
    assert len({d["error_code"] for d in dead}) == 5
    first = decisions[0]
    assert first["model_name"] == "fraud" and first["model_version"] == "1"
    assert first["key"] == str(first["key"]) and first["outcome"] in ("approve", "review",
                                                                      "decline")
    down = sum("online_store_down" in d["degraded_reasons"] for d in decisions)
    assert down == 0
    reasons = collections.Counter(r for d in decisions for r in d["degraded_reasons"])
    assert sum(not d["degraded"] for d in decisions) > len(decisions) / 2, reasons
    assert ready == 200
    # Exact: this counter once read 3,700 in the full suite, when Feast's import had made
    # prometheus_client share values across registries (fixed in stream.metrics).
    assert events == n
    assert "streamscore_events_total" in metrics
    assert 'streamscore_dead_letters_total{pipeline="fraud",reason="not_json"}' in metrics
    assert "streamscore_e2e_latency_seconds_bucket" in metrics


def test_one_worker_end_to_end_on_each_broker(env, unique_name, any_broker):
    # The small matrix that keeps the emulators covered for machines without Java.
    from dataclasses import replace

    from stream.dev.embedded import client_settings_for

    kind, bootstrap = any_broker
    here = replace(env, bootstrap=bootstrap, settings=dict(client_settings_for(kind)))
    path = write_pipeline(here, unique_name)
    counts = produce(path, 300, bad_ratio=0.05, seed=3)
    good_ids, n_bad = expected_ids(300, 3, 0.05)
    assert counts == {"good": len(good_ids), "bad": n_bad}
    decide_all(path, bootstrap, unique_name, good_ids, n_bad)


def test_two_workers_split_partitions(env, unique_name):
    path = write_pipeline(env, unique_name)
    a = ThreadWorker(path, worker_id="wa")
    b = ThreadWorker(path, worker_id="wb")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            a.worker.consumer.assignment and b.worker.consumer.assignment
        ):
            time.sleep(0.2)
        produce(path, 2000, seed=3)
        decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=2000)
        parts_a, parts_b = set(a.worker.consumer.assignment), set(b.worker.consumer.assignment)
    finally:
        a.stop()
        b.stop()
    assert parts_a and parts_b and not parts_a & parts_b and len(parts_a | parts_b) == 4
    by_worker = collections.Counter(d["worker_id"] for d in decisions)
    assert set(by_worker) == {"wa", "wb"}
    assert {d["event_id"] for d in decisions} == {f"3-{j}" for j in range(2000)}


def _run_across_alias_move(env, unique_name, path, registry, alias, n, seeds):
    """Score ``n`` events, register a copy of the champion and move ``alias`` to it, score
    ``n`` more; returns (first decisions, all decisions, the new version, reloads)."""
    v1 = registry.resolve("fraud@champion")
    tw = ThreadWorker(path)
    try:
        produce(path, n, seed=seeds[0])
        first = read_topic(env.bootstrap, f"{unique_name}.dec", want=n)
        new = registry.register(v1.read_text(), "fraud", dict(v1.metadata))
        registry.promote("fraud", new.version, alias)
        time.sleep(1.0)
        produce(path, n, seed=seeds[1])
        both = read_topic(env.bootstrap, f"{unique_name}.dec", want=2 * n)
        reloads = tw.worker.stats.reloads
    finally:
        tw.stop()
    return first, both, new, reloads


def test_hot_reload_switches_versions_without_restart(env, unique_name):
    from scorers.registry import Registry

    path = write_pipeline(env, unique_name, model={"ref": "fraud@champion",
                                                   "registry": str(env.registry),
                                                   "reload_check_s": 0.2})
    registry = Registry(env.registry)
    v1 = registry.resolve("fraud@champion")
    try:
        first, both, v2, reloads = _run_across_alias_move(
            env, unique_name, path, registry, "champion", 300, (5, 6))
    finally:
        registry.promote("fraud", v1.version, "champion")
    assert {d["model_version"] for d in first} == {str(v1.version)}
    later = [d for d in both if d["event_id"].startswith("6-")]
    assert len(later) == 300 and {d["model_version"] for d in later} == {str(v2.version)}
    assert reloads == 1


def _spawn(path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "run", "--pipeline", str(path),
         "--metrics-port", "-1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "STREAMSCORE_HOME": str(ROOT / ".streamscore")},
    )


def _wait_for_decisions(bootstrap: str, topic: str, at_least: int, timeout: float = 60) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{os.urandom(4).hex()}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        while seen < at_least and time.monotonic() < deadline:
            seen += sum(1 for m in c.consume(500, 0.2) if m.error() is None)
    finally:
        c.close()
    assert seen >= at_least, f"only {seen} decisions in {timeout} s"


def test_sigterm_drains_then_restart_and_kill_lose_nothing(env, unique_name):
    # Static membership: the restarted worker takes over the crashed one's partitions at
    # once. (noida-db never expires a dead member - measured: no reassignment within 45 s
    # at session.timeout.ms=6000, where Tansu reassigns after ~11 s.)
    path = write_pipeline(env, unique_name, kafka={"consumer": {
        "group.instance.id": f"{unique_name}-w0", "session.timeout.ms": 6000}})
    n = 4000
    producer = threading.Thread(target=produce, args=(path, n), kwargs={"rate": 1000, "seed": 8})
    proc = _spawn(path)
    producer.start()
    try:
        _wait_for_decisions(env.bootstrap, f"{unique_name}.dec", 500)
        proc.send_signal(signal.SIGTERM)  # graceful: drain, flush, commit, close
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out.decode()
        assert b"stopped after" in out
        # CPU per event of the whole process, then of the loop's thread alone (a part of it)
        cpu = re.search(rb"([\d.]+) us CPU per event, ([\d.]+) of them in the loop's thread",
                        out)
        assert cpu is not None, out.decode()
        assert 0.0 < float(cpu[2]) <= float(cpu[1])
        proc = _spawn(path)
        _wait_for_decisions(env.bootstrap, f"{unique_name}.dec", 2000)
        proc.kill()  # a crash: whatever was not committed is re-delivered
        proc.wait(30)
        proc = _spawn(path)
        producer.join(60)
        decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=n, timeout=90)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    ids = collections.Counter(d["event_id"] for d in decisions)
    lost = {f"8-{j}" for j in range(n)} - set(ids)
    assert not lost, f"{len(lost)} events lost, e.g. {sorted(lost)[:5]}"
    duplicates = sum(v - 1 for v in ids.values())
    print(f"duplicates after a SIGKILL mid-stream: {duplicates}")
    assert duplicates <= 2 * 1024  # at most the batches in flight when killed


def test_exactly_once_mode(env, unique_name, broker_kind):
    if broker_kind == "tansu":
        pytest.skip("Tansu's read_committed shows aborted messages")
    path = write_pipeline(env, unique_name, kafka={"exactly_once": True})
    produce(path, 1500, bad_ratio=0.02, seed=9)
    good, n_bad = expected_ids(1500, 9, 0.02)
    decide_all(path, env.bootstrap, unique_name, good, n_bad, read_committed=True)


def test_redis_stopped_mid_stream_degrades_then_recovers(env, unique_name):
    from features.materialize import apply_repo, materialize_repo
    from features.repo import prepare_repo
    from stream.dev.embedded import start_redis_server

    server = start_redis_server()  # our own: the shared Redis is never stopped
    try:
        repo = prepare_repo("fraud", env.home / unique_name, project=unique_name,
                            redis_url=server.url, data_dir=env.home / "data" / "fraud")
        apply_repo(repo, server.url)
        materialize_repo(repo, redis_url=server.url, progress=False)
        path = write_pipeline(env, unique_name, redis_url=server.url)
        doc = yaml.safe_load(path.read_text())
        doc["features"].update({"repo": str(repo), "timeout_ms": 300})
        path.write_text(yaml.safe_dump(doc))
        tw = ThreadWorker(path)
        pid = server.process.pid
        try:
            produce(path, 300, seed=11)
            before = read_topic(env.bootstrap, f"{unique_name}.dec", want=300)
            os.kill(pid, signal.SIGSTOP)  # Redis stops answering mid-stream
            try:
                produce(path, 300, seed=12)
                during = read_topic(env.bootstrap, f"{unique_name}.dec", want=600)
            finally:
                os.kill(pid, signal.SIGCONT)
            time.sleep(2.0)  # the reader's circuit breaker probes again after 1 s
            produce(path, 300, seed=13)
            after = read_topic(env.bootstrap, f"{unique_name}.dec", want=900)
        finally:
            tw.stop()
    finally:
        server.stop()

    def down(records, prefix):
        mine = [d for d in records if d["event_id"].startswith(prefix)]
        assert len({d["event_id"] for d in mine}) == 300, "every event still gets a decision"
        return sum("online_store_down" in d["degraded_reasons"] for d in mine)

    assert down(before, "11-") == 0
    assert down(during, "12-") == 300
    stalled = [d for d in during if d["event_id"].startswith("12-")]
    assert all(d["degraded"] and d["rule"] in ("fallback_amount", "amount_over_limit",
                                               "blocked_country") for d in stalled)
    assert down(after, "13-") == 0


def test_full_producer_queue_pauses_input_instead_of_failing(env, unique_name):
    # A tiny producer queue: every batch overflows it, so the worker must pause, drain
    # to the low watermark, resume - and still lose nothing.
    path = write_pipeline(env, unique_name, kafka={
        "producer": {"queue.buffering.max.messages": 64}})
    produce(path, 1500, seed=21)
    tw = ThreadWorker(path, batch_max=1024)
    try:
        decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=1500)
        pauses = tw.worker.producer.pauses
    finally:
        tw.stop()
    assert {d["event_id"] for d in decisions} == {f"21-{j}" for j in range(1500)}
    assert pauses > 0


def _first_bad(n: int, ratio: float, lo: int, hi: int) -> tuple[int, int]:
    """A seed whose first malformed event (in produce order) falls in [lo, hi)."""
    import numpy as np

    for seed in range(30, 400):
        bad = np.flatnonzero(np.random.default_rng(seed + 1).random(n) < ratio)
        if len(bad) and lo <= bad[0] < hi:
            return seed, int(bad[0])
    raise AssertionError("no seed found")


def test_offsets_never_committed_ahead_of_acks(env, unique_name):
    # One input partition (offsets = produce order). The dead-letter topic refuses every
    # record (broker-side max.message.bytes), so the batch holding the first malformed
    # event fails its acknowledgement ~0.5 s after it was produced, while the worker has
    # already scored and produced later batches (their decisions are acknowledged).
    # The committed offset must stop at or before that batch - never after it.
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from stream.kafka.clients import DeliveryFailed

    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    futures = admin.create_topics([
        NewTopic(f"{unique_name}.in", 1, 1),
        NewTopic(f"{unique_name}.dlq", 1, 1, config={"max.message.bytes": "200"}),
    ])
    for f in futures.values():
        f.result(15)
    path = write_pipeline(env, unique_name, batch={"max_messages": 32, "adaptive": False},
                          kafka={"producer": {"message.timeout.ms": 10_000}})
    n = 800
    seed, first_bad = _first_bad(n, 0.004, 200, 400)
    produce(path, n, bad_ratio=0.004, seed=seed)
    tw = ThreadWorker(path, max_inflight_batches=8)
    tw.thread.join(90)
    assert not tw.thread.is_alive(), "the worker did not stop on a rejected output"
    assert isinstance(tw.error, DeliveryFailed), repr(tw.error)
    assert "dlq" in str(tw.error)
    decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=first_bad)
    c = Consumer({"bootstrap.servers": env.bootstrap, "group.id": f"{unique_name}-g"})
    try:
        committed = c.committed([TopicPartition(f"{unique_name}.in", 0)], timeout=15)[0].offset
    finally:
        c.close()
    offsets = {d["source_offset"] for d in decisions}
    # Everything before the failed batch was acknowledged and committed (the prefix) ...
    assert 0 < committed <= first_bad, (committed, first_bad)
    assert set(range(committed)) <= offsets
    # ... while later batches were in flight (scored, produced, even acknowledged),
    # and not one of them was committed.
    assert max(offsets) > first_bad + 32, (max(offsets), first_bad)


def test_velocity_permission_error_is_counted_and_scoring_goes_on(env, unique_name):
    # A Redis ACL user that may read features but not run scripts: every velocity update
    # fails with NOPERM. The worker must log and count it and keep deciding.
    import redis

    from features.materialize import apply_repo, materialize_repo
    from features.repo import prepare_repo
    from stream.dev.embedded import start_redis_server

    server = start_redis_server()  # our own: no ACL users on the shared Redis
    try:
        repo = prepare_repo("fraud", env.home / unique_name, project=unique_name,
                            redis_url=server.url, data_dir=env.home / "data" / "fraud")
        apply_repo(repo, server.url)
        materialize_repo(repo, redis_url=server.url, progress=False)
        admin = redis.Redis.from_url(server.url)
        admin.acl_setuser("scorer", enabled=True, passwords=["+pw"], keys=["*"],
                          channels=["*"], commands=["+@all", "-@scripting"])
        port = server.url.rsplit(":", 1)[1].split("/")[0]
        limited = f"redis://scorer:pw@127.0.0.1:{port}/0"
        path = write_pipeline(env, unique_name, redis_url=limited)
        doc = yaml.safe_load(path.read_text())
        doc["features"]["repo"] = str(repo)
        path.write_text(yaml.safe_dump(doc))
        produce(path, 400, seed=31)
        tw = ThreadWorker(path)
        try:
            decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=400)
            alive = tw.thread.is_alive()
            faults = tw.worker.metrics.registry.get_sample_value(
                "streamscore_velocity_update_faults_total",
                {"pipeline": "fraud", "status": "error"})
        finally:
            tw.stop()
    finally:
        server.stop()
    assert alive, "a velocity permission error stopped the worker"
    assert {d["event_id"] for d in decisions} == {f"31-{j}" for j in range(400)}
    assert faults and faults >= 1
    assert not any("online_store_down" in d["degraded_reasons"] for d in decisions)


def test_challenger_hot_reload_follows_its_alias(env, unique_name):
    from scorers.registry import Registry

    registry = Registry(env.registry)
    v1 = registry.resolve("fraud@champion")
    c1 = registry.register(v1.read_text(), "fraud", dict(v1.metadata))
    registry.promote("fraud", c1.version, "challenger")
    path = write_pipeline(env, unique_name, model={
        "ref": "fraud@champion", "challenger": "fraud@challenger",
        "registry": str(env.registry), "reload_check_s": 0.2})
    first, both, c2, reloads = _run_across_alias_move(
        env, unique_name, path, registry, "challenger", 200, (41, 42))
    assert {d["challenger_version"] for d in first} == {f"fraud@{c1.version}"}
    later = [d for d in both if d["event_id"].startswith("42-")]
    assert len(later) == 200
    assert {d["challenger_version"] for d in later} == {f"fraud@{c2.version}"}
    assert {d["model_version"] for d in later} == {str(v1.version)}  # champion unchanged
    assert reloads == 1


def test_rebalance_mid_backlog_commits_in_flight_batches_first(env, unique_name, broker_kind):
    # Worker A drains a backlog with batches in flight when B joins: A's revoke callback
    # must wait for its in-flight acks and commit them before the partitions move, so B
    # starts after A's last committed decision: nothing lost, duplicates bounded.
    path = write_pipeline(env, unique_name)
    # A backlog that A cannot drain while B starts: on Apache Kafka A decided all of
    # 20,000 before B had joined.
    n = 40_000
    produce(path, n, seed=51)
    a = ThreadWorker(path, worker_id="wa", batch_max=256, max_inflight_batches=8)
    b = None
    try:
        _wait_for_decisions(env.bootstrap, f"{unique_name}.dec", 1000)
        b = ThreadWorker(path, worker_id="wb", batch_max=256)
        decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=n, timeout=120)
        revoked_a = a.worker.stats.events
        # A no longer holds offsets of partitions it gave up: its close must not commit
        # them over B's progress.
        stale = a.worker.consumer.acked_partitions() & set(b.worker.consumer.assignment)
    finally:
        a.stop()
        if b is not None:
            b.stop()
    ids = collections.Counter(d["event_id"] for d in decisions)
    assert set(ids) == {f"51-{j}" for j in range(n)}  # never lost
    twice = sum(v - 1 for v in ids.values())
    refused = a.worker.consumer.commit_failures
    print(f"decided twice: {twice}; revoke commits refused by the broker: {refused}")
    # At most what was in flight (the bound, 8 batches) + 1 batch is decided twice. With a
    # broker honouring the revoke-time commit that is 0; noida-db sometimes refuses it
    # (ILLEGAL_GENERATION) or hands the partition over before it lands - measured: 512-768
    # here, and 256 with the former one-batch-at-a-time loop.
    assert twice <= 9 * 256, twice
    if broker_kind == "kafka":  # honours the revoke-time commit: nothing decided twice
        # A commit may still race the group's next generation (1 refusal in ~1 run of 3
        # seen); what must hold is that nothing was decided twice.
        assert twice == 0 and refused <= 1, (twice, refused)
    by_worker = collections.Counter(d["worker_id"] for d in decisions)
    assert by_worker["wb"] > 0 and revoked_a < n, by_worker  # the partitions did move
    assert not stale, stale


def test_in_flight_bound_waits_for_acks_and_loses_nothing(env, unique_name):
    # One batch in flight at most: every batch waits for its own acks before the next
    # consume() (the backpressure path), and every event is still decided exactly once.
    path = write_pipeline(env, unique_name, batch={"max_messages": 32, "adaptive": False})
    produce(path, 1200, seed=61)
    tw = ThreadWorker(path, max_inflight_batches=1)
    try:
        decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=1200, timeout=60)
        waits = tw.worker.inflight.waits
    finally:
        tw.stop()
    ids = collections.Counter(d["event_id"] for d in decisions)
    assert set(ids) == {f"61-{j}" for j in range(1200)} and max(ids.values()) == 1
    assert waits > 0


@pytest.fixture(scope="module")
def sasl_ssl_broker(tmp_path_factory):
    """Apache Kafka whose client listener is SASL_SSL (SCRAM-SHA-512), a CA made now."""
    import shutil

    from stream.dev.embedded import start_broker
    from stream.dev.kafka import SaslSsl, kafka_available

    if not kafka_available() or shutil.which("openssl") is None:
        pytest.skip("needs Apache Kafka (Java 17+, Maven) and openssl")
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=streamscore test CA")
    openssl("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "broker.crt", "-days", "1", "-extfile", "san.cnf")
    pem = d / "broker.pem"  # Kafka's PEM keystore: the PKCS#8 key, then the chain
    pem.write_text("".join((d / f).read_text() for f in ("broker.key", "broker.crt", "ca.pem")))
    password = os.urandom(12).hex()
    broker = start_broker("kafka", sasl_ssl=SaslSsl({"scorer": password}, str(pem)))
    yield broker, password, str(d / "ca.pem")
    broker.stop()


def test_worker_over_sasl_ssl_and_a_wrong_password_is_one_clear_line(
        env, unique_name, sasl_ssl_broker, monkeypatch):
    from dataclasses import replace

    broker, password, ca = sasl_ssl_broker
    client = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
              "sasl.username": "scorer", "sasl.password": password, "ssl.ca.location": ca}
    path = write_pipeline(replace(env, bootstrap=broker.address, settings=client), unique_name)
    # The pipeline file names the secret only through the environment.
    doc = yaml.safe_load(path.read_text())
    doc["kafka"]["settings"]["sasl.password"] = "${KAFKA_SASL_PASSWORD}"
    path.write_text(yaml.safe_dump(doc))
    assert password not in path.read_text()

    monkeypatch.setenv("KAFKA_SASL_PASSWORD", password)
    config = load_pipeline(path)
    produce_events(config, broker.address, 300, 0.0, bad_ratio=0.05, seed=12, progress=False,
                   data_dir=path.parent / "data" / "fraud", settings=client)
    good, n_bad = expected_ids(300, 12, 0.05)
    decide_all(path, broker.address, unique_name, good, n_bad, settings=client)

    wrong = "wrong-" + os.urandom(6).hex()
    run = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--pipeline", str(path)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={**os.environ, "KAFKA_SASL_PASSWORD": wrong},
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    errors = [line for line in out.splitlines() if line.startswith("streamscore: error:")]
    print(errors[0] if errors else out)
    assert len(errors) == 1 and "Kafka refused the login" in errors[0], out
    assert "SCRAM-SHA-512" in errors[0] and "Traceback" not in out
    assert wrong not in out and password not in out


def test_a_dead_letter_the_broker_refuses_is_replaced_and_the_group_goes_on(env, unique_name):
    # The dead-letter topic takes 20 kB at most; three inputs of 100 kB of garbage make
    # dead letters of ~130 kB: each is replaced by a minimal one (no payload; its size,
    # sha256 and source kept), counted, and every other event is decided as usual.
    import hashlib

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    for f in admin.create_topics([NewTopic(f"{unique_name}.dlq", 4, 1,
                                           config={"max.message.bytes": "20000"})]).values():
        f.result(30)
    path = write_pipeline(env, unique_name)
    produce(path, 600, seed=61)
    big = [os.urandom(100_000) for _ in range(3)]
    p = Producer({"bootstrap.servers": env.bootstrap, "message.max.bytes": 2_000_000})
    for payload in big:
        p.produce(f"{unique_name}.in", payload, b"card-x")
    assert p.flush(30) == 0
    produce(path, 300, seed=62)
    tw = ThreadWorker(path)
    try:
        decisions = read_topic(env.bootstrap, f"{unique_name}.dec", want=900)
        dead = read_topic(env.bootstrap, f"{unique_name}.dlq", want=3)
        refused = tw.worker.metrics.registry.get_sample_value(
            "streamscore_output_refused_total",
            {"pipeline": "fraud", "topic": f"{unique_name}.dlq", "error": "MSG_SIZE_TOO_LARGE"})
    finally:
        tw.stop()
    assert {d["event_id"] for d in decisions} == (
        {f"61-{j}" for j in range(600)} | {f"62-{j}" for j in range(300)})
    assert len(dead) == 3 and {d["error_code"] for d in dead} == {"output_rejected"}
    assert all(d["payload_size"] > 100_000 for d in dead)  # the refused records
    assert all(d["topic"] == f"{unique_name}.in" and d["offset"] >= 0 for d in dead)
    assert len({d["payload_sha256"] for d in dead}) == 3
    assert all(len(d["payload_sha256"]) == len(hashlib.sha256().hexdigest()) for d in dead)
    assert refused == 3


def test_a_failed_hot_reload_is_counted_and_retried(env, unique_name, monkeypatch):
    # The new champion fails to load once (a passing fault: a full disk, a slow volume):
    # the old model keeps scoring, the failure is counted, and the next check loads it.
    import stream.step as step_module
    from scorers.registry import Registry
    from stream.core.assembly import build_stages
    from stream.metrics import WorkerMetrics
    from stream.step import BatchStep

    path = write_pipeline(env, unique_name, model={"ref": "fraud@champion",
                                                   "registry": str(env.registry)})
    config = load_pipeline(path)
    stages = build_stages(config)
    metrics = WorkerMetrics(config.name)
    step = BatchStep(config, stages, metrics, background_velocity=False)
    registry = Registry(env.registry)
    v1 = registry.resolve("fraud@champion")
    real_load, calls = step_module.load_model, []

    def flaky_load(*args, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("No space left on device")
        return real_load(*args, **kw)

    monkeypatch.setattr(step_module, "load_model", flaky_load)
    try:
        new = registry.register(v1.read_text(), "fraud", dict(v1.metadata))
        registry.promote("fraud", new.version, "champion")
        assert not step.reload()  # failed: the old model scores on
        assert stages.core.model.version == str(v1.version)
        failures = metrics.registry.get_sample_value(
            "streamscore_model_reload_failures_total", {"pipeline": config.name})
        assert failures == 1
        assert step.reload()  # retried at the next check, with nothing new in the registry
        assert stages.core.model.version == str(new.version)
    finally:
        registry.promote("fraud", v1.version, "champion")
        step.close()
        stages.close()
