"""``streamscore demo --pipeline PIPELINE``: the whole engine end to end on embedded infrastructure.

From a fresh clone: start the embedded Kafka broker and find (or start) Redis; generate
the pipeline's synthetic data; apply the Feast repo and materialize it into Redis; train
and register the model (reused when a champion is already registered); start a worker
process; produce events at a steady rate with a few malformed ones; consume the
decisions, dead letters and drift windows; print a report; stop everything it started.
Work files live in ``$STREAMSCORE_HOME`` (default ``./.streamscore``).
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from schemas.errors import InfrastructureError

__all__ = ["run"]

BAD_RATIO = 0.002  # a few malformed events: ~40 in 20,000
# The report reader's idle-fetch backoff (stream.kafka.idle): the worker's default, and like the
# worker's, overridden by STREAMSCORE_IDLE_BACKOFF_MS (0 = off).
IDLE_BACKOFF_MS = 5.0
# Demo-sized synthetic data: big enough to be realistic, small enough for 2 cores.
SIZES: dict[str, dict[str, int]] = {
    "fraud": {"cards": 20_000, "merchants": 2_000},
    "pricing": {"skus": 5_000, "stores": 100},
}


def _step(text: str) -> float:
    print(f"-- {text}", flush=True)
    return time.perf_counter()


def _done(t0: float, what: str = "") -> None:
    print(f"   {what + ' ' if what else ''}({time.perf_counter() - t0:.1f} s)", flush=True)


def _prepare(pipeline: str, repo: Path, redis_url: str) -> Any:
    """Data, Feast repo in Redis, a registered champion; returns the model version."""
    from features.materialize import apply_repo, materialize_repo
    from features.repo import data_dir
    from features.synthetic import generate
    from scorers.registry import ModelNotFoundError, Registry
    from scorers.train import TrainOptions, train_and_register

    data = data_dir(pipeline)
    if not (data / "training.parquet").exists():
        t0 = _step(f"generating synthetic {pipeline} data into {data}")
        res = generate(pipeline, data, progress=True, **SIZES[pipeline])  # type: ignore[arg-type]
        _done(t0, f"{sum(res.rows.values()):,} rows")
    t0 = _step(f"feast apply + materialize {repo} into {redis_url}")
    apply_repo(repo, redis_url)
    mat = materialize_repo(repo, redis_url=redis_url, progress=True)
    _done(t0, f"{mat.rows:,} rows, project {mat.project}")
    registry = Registry()
    try:
        mv = registry.resolve(f"{pipeline}@champion")
        print(f"-- model {mv.ref} is the registered champion (sha256 {mv.sha256[:12]}...)")
    except ModelNotFoundError:
        t0 = _step(f"training and registering the {pipeline} model")
        # Fewer trees than 'model train' would grow: the demo must finish in minutes on
        # 2 cores; early stopping usually ends well before this anyway.
        mv = train_and_register(pipeline=pipeline, registry=registry,
                                options=TrainOptions(num_trees=150, progress=True),
                                promote=["champion"])
        _done(t0, f"{mv.ref} sha256 {mv.sha256[:12]}...")
    return mv


def _write_pipeline(source: Path, repo: Path, bootstrap: str, redis_url: str, tag: str,
                    port: int) -> Path:
    import yaml

    from features.repo import streamscore_home

    pipeline = source.stem
    doc = yaml.safe_load(source.read_text())
    doc["kafka"]["bootstrap_servers"] = bootstrap
    doc["kafka"]["group_id"] = f"demo-{pipeline}-{tag}"
    for key in ("input", "decisions", "dead_letter", "drift"):
        doc["topics"][key] = f"{doc['topics'][key]}.{tag}"
    doc["features"]["repo"] = str(repo)
    doc["features"]["redis_url"] = redis_url
    # The demo shares 2 cores with the broker, Redis and the producer: a 20 ms read
    # timeout would measure the machine's load, not the engine. 60 ms stays inside the
    # 100 ms budget.
    doc["features"]["timeout_ms"] = max(float(doc["features"].get("timeout_ms", 20)), 60.0)
    doc["metrics"] = {"port": port}
    # Sub-windows of 1,000 events: a 20,000-event demo closes a drift window ~every 0.5 s.
    doc.setdefault("drift", {})["window_events"] = 5000
    path = streamscore_home() / "demo" / f"{pipeline}-{tag}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return -1.0
    for line in text.decode().splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


class _Collector(threading.Thread):
    """Reads decisions, dead letters and drift records while the demo produces."""

    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from stream.kafka.idle import IdleFetch

        backoff_s = float(os.environ.get("STREAMSCORE_IDLE_BACKOFF_MS", IDLE_BACKOFF_MS)) / 1e3
        self.topics = topics
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"demo-report-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False, **IdleFetch.settings(backoff_s),
        })
        # Every partition of the run's own topics from the start (they exist already:
        # ensure_topics ran), assigned rather than subscribed: no group to join, and a
        # fixed set of partitions for the idle backoff below.
        meta = self.consumer.list_topics(timeout=10)
        keys = [(t, p) for t in topics.values() for p in sorted(meta.topics[t].partitions)]
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in keys])
        # Between the drift records the drift topic is idle, and after the run all are:
        # on noida-db an idle consumer re-fetches in a tight loop and takes CPU from the
        # worker and Redis (stream.kafka.idle), so the reader pauses once its input has stopped.
        self._fetch = IdleFetch(self.consumer, lambda: keys, backoff_s)
        self.records: dict[str, list[tuple[float, bytes]]] = {k: [] for k in topics}
        self._kind = {v: k for k, v in topics.items()}
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for m in self._fetch.consume(1000, 0.1):
                    if m.error() is None:
                        kind = self._kind[m.topic() or ""]
                        self.records[kind].append((time.time(), m.value() or b""))
        finally:
            self._fetch.close()
            self.consumer.close()

    def count(self, kind: str) -> int:
        return len(self.records[kind])


def _report(col: _Collector, counts: dict[str, int], pipeline: str, took: float,
            broker: str) -> bool:
    dec = msgspec.json.Decoder()
    decisions = [(t, dec.decode(v)) for t, v in col.records["decisions"]]
    dead = [dec.decode(v) for _, v in col.records["dead_letter"]]
    drift = [dec.decode(v) for _, v in col.records["drift"]]
    ids = collections.Counter(d["event_id"] for _, d in decisions)
    outcomes = collections.Counter(d["outcome"] for _, d in decisions)
    degraded = collections.Counter(r for _, d in decisions for r in d["degraded_reasons"])
    n_degraded = sum(1 for _, d in decisions if d["degraded"])
    codes = collections.Counter(d["error_code"] for d in dead)
    reasons = collections.Counter(r["feature"] for _, d in decisions for r in d["reasons"])
    worker_e2e = np.array([d["e2e_ms"] for _, d in decisions]) if decisions else np.zeros(1)
    # The full loop: event created at the producer -> decision read back by this report.
    loop = (np.array([(t - d["event_time"]) * 1e3 for t, d in decisions]) if decisions
            else np.zeros(1))
    stages = collections.defaultdict(list)
    for _, d in decisions:
        for k, v in d["latency_ms"].items():
            stages[k].append(v)

    def pct(a: Any) -> str:
        return (f"p50 {np.percentile(a, 50):7.1f}  p99 {np.percentile(a, 99):7.1f}  "
                f"max {np.max(a):7.1f} ms")

    print()
    print(f"== streamscore demo report: {pipeline} ==")
    print(f"broker                      {broker}")
    print(f"events produced      {counts['good'] + counts['bad']:>8,}  ({counts['good']:,} good, "
          f"{counts['bad']:,} malformed) in {took:.1f} s")
    print(f"decisions            {len(decisions):>8,}  (unique event ids {len(ids):,}, "
          f"duplicates {len(decisions) - len(ids)})")
    print("  by outcome         " + ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common()))
    if pipeline == "pricing" and decisions:
        prices = np.array([d["price"] for _, d in decisions if d["price"] is not None])
        rules = collections.Counter(d["rule"] or "model" for _, d in decisions)
        print(f"  prices set         mean {prices.mean():.2f}, by " + ", ".join(
            f"{k} {v:,}" for k, v in rules.most_common()))
    print(f"dead letters         {len(dead):>8,}  " + ", ".join(
        f"{k} {v}" for k, v in codes.most_common()))
    print(f"degraded decisions   {n_degraded:>8,}  " + ", ".join(
        f"{k} {v:,}" for k, v in degraded.most_common()))
    print(f"worker e2e latency   {pct(worker_e2e)}   (producer timestamp -> decision encoded)")
    print(f"full loop latency    {pct(loop)}   (event created -> decision read back)")
    for k in ("decode", "features", "score", "policy"):
        if stages.get(k):
            print(f"  batch stage {k:<8} p50 {np.percentile(stages[k], 50):6.2f}  "
                  f"p99 {np.percentile(stages[k], 99):6.2f} ms")
    if reasons:
        print("top reason codes     " + ", ".join(f"{k} ({v})" for k, v in reasons.most_common(5)))
    if decisions:
        d0 = decisions[-1][1]
        print(f"model                {d0['model_name']}@{d0['model_version']} "
              f"sha256 {d0['model_sha256'][:16]}...")
    if drift:
        last = drift[-1]
        feats = sorted(last["features"], key=lambda f: -f["psi"])[:3]
        alarms = last["alarms"]
        shown = ", ".join(alarms[:4]) + (f" (+{len(alarms) - 4} more)" if len(alarms) > 4
                                         else "")
        print(f"drift windows        {len(drift):>8,}  last: {last['n']:,} events, score PSI "
              f"{last['score']['psi']:.3f} ({last['score']['level']}), alarms {shown or 'none'}")
        print("  highest PSI        " + ", ".join(
            f"{f['name']} {f['psi']:.3f} ({f['level']})" for f in feats))
    else:
        print("drift windows               0")
    ok = len(ids) == counts["good"] and len(dead) == counts["bad"]
    print("demo: OK - every good event got exactly one decision, every malformed one a dead "
          "letter" if ok else "demo: INCOMPLETE - see the counts above")
    return ok


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every event was accounted for."""
    from features.pipelines import pipeline_kind, pipeline_repo
    from features.repo import streamscore_home
    from stream.config import load_pipeline
    from stream.dev.embedded import default_broker_kind, free_port, resolve_redis, start_broker
    from stream.dev.load import produce_events
    from stream.kafka.admin import ensure_topics

    source = Path(args.pipeline)  # the pipeline file (the CLI resolved a name to it)
    repo, pipeline = pipeline_repo(source), pipeline_kind(source)
    kind = args.broker or default_broker_kind()
    n = max(1, int(args.events))
    started = time.perf_counter()
    t0 = _step(f"starting the embedded Kafka broker (--broker {kind}) and Redis")
    broker = start_broker(kind)
    redis_server = resolve_redis()
    worker: subprocess.Popen[bytes] | None = None
    col: _Collector | None = None
    try:
        _done(t0, f"kafka {broker.address} ({broker.label}), "
                  f"redis {redis_server.url} ({redis_server.origin})")
        _prepare(pipeline, repo, redis_server.url)
        tag = uuid.uuid4().hex[:6]
        port = free_port()
        path = _write_pipeline(source, repo, broker.address, redis_server.url, tag, port)
        config = load_pipeline(path)
        t = config.topics
        ensure_topics(broker.address, [t.input, t.decisions, t.dead_letter, t.drift],
                      partitions=t.partitions)
        t0 = _step(f"starting a worker: streamscore run --pipeline {path}")
        # The worker finds the registry and data where this process put them.
        env = {**os.environ, "REDIS_URL": redis_server.url,
               "STREAMSCORE_HOME": str(streamscore_home())}
        log_path = path.with_suffix(".log")
        with open(log_path, "wb") as log_file:
            worker = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "run", "--pipeline", str(path)],
                env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while _metric(port, "streamscore_assigned_partitions") <= 0:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise InfrastructureError(f"the worker did not start; see {log_path}")
            time.sleep(0.2)
        _done(t0, f"ready, metrics on http://127.0.0.1:{port}/metrics, log {log_path}")
        col = _Collector(broker.address, {"decisions": t.decisions,
                                          "dead_letter": t.dead_letter, "drift": t.drift})
        col.start()
        t0 = _step(f"producing {n:,} events at {args.rate:,.0f}/s to {t.input} "
                   f"(~{BAD_RATIO:.1%} malformed)")
        counts = produce_events(config, broker.address, n, args.rate, bad_ratio=BAD_RATIO,
                                seed=int(time.time()) % 100_000)
        took = time.perf_counter() - t0
        _done(t0)
        t0 = _step("waiting for every decision and dead letter")
        deadline = time.monotonic() + 120
        while (col.count("decisions") < counts["good"] or col.count("dead_letter") < counts["bad"]
               ) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # a last drift window, a late duplicate
        _done(t0)
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        print(f"-- worker stopped (exit {worker.returncode}); its log: {log_path}")
        col.stop.set()
        col.join(10)
        ok = _report(col, counts, pipeline, took, broker.label)
        print(f"demo finished in {time.perf_counter() - started:.0f} s")
        return 0 if ok and worker.returncode == 0 else 1
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(10)
        if col is not None and col.is_alive():
            col.stop.set()
            col.join(10)
        broker.stop()
        redis_server.stop()
        print("stopped everything the demo started")
