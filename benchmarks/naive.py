"""The naive baseline worker: the scoring service most teams write first, for comparison.

One event at a time: confluent-kafka ``poll`` -> ``json.loads`` -> a few hand-written
checks -> ``FeatureStore.get_online_features`` for the event's entities ->
request-time features (the project's own function, on a one-row batch, so both stacks
feed the model the same numbers) -> ``Booster.predict`` on one row -> fixed score
bands -> ``produce`` the decision (JSON) -> commit the offset. Nothing is batched,
compiled or planned ahead; that is the point. Same broker, Redis, model and events as
the streamscore worker, so the benchmark compares the code, not the setup.

Bad input goes to the dead-letter topic, so every input event is accounted for. Each
decision carries ``decided_at`` (fetch time) and per-stage milliseconds, the same shape
as the worker's ``Decision`` fields the harness reads.

Run as a subprocess by the benchmark: ``python -m benchmarks.naive --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from typing import Any

__all__ = ["NaiveScorer", "main"]


class NaiveScorer:
    """Per-event enrichment and scoring the straightforward way (Feast SDK + Booster)."""

    def __init__(
        self, pipeline: str, repo: str, model_path: str, redis_url: str | None,
        review_above: float = 0.35, decline_above: float = 0.8,
    ) -> None:
        import lightgbm as lgb

        from features.repo import feature_refs, load_definitions, load_vocab, open_store
        from features.request import RequestFeatures, request_spec
        from schemas.registry import schema_type

        self.pipeline = pipeline
        self.store = open_store(repo, redis_url)
        self.refs = feature_refs(repo)
        self.names = [r.split(":", 1)[1] for r in self.refs]
        self.vocab = load_vocab(repo)
        self.request = RequestFeatures(pipeline, self.vocab)
        self.spec = request_spec(pipeline)
        self.join_keys = [k for e in load_definitions(repo).ENTITIES for k in [e.join_key]]
        self.booster = lgb.Booster(model_file=model_path)
        self.model_features = list(self.booster.feature_name())
        self.required = list(schema_type(
            "fraud_transaction" if pipeline == "fraud" else "pricing_request"
        ).__struct_fields__)
        self.required.remove("schema_version")
        self.review_above, self.decline_above = review_above, decline_above

    def check(self, ev: Any) -> None:
        """The hand-written validation a first version has; raises ValueError."""
        if not isinstance(ev, dict):
            raise ValueError("not an object")
        for name in self.required:
            if name not in ev:
                raise ValueError(f"missing {name}")
        for key in self.join_keys:
            if key in ("card_id", "sku_id") and not isinstance(ev[key], int):
                raise ValueError(f"{key} must be an integer")
        for name in ("amount", "base_price", "candidate_price"):
            if name in ev and (not isinstance(ev[name], int | float) or ev[name] < 0):
                raise ValueError(f"{name} out of range")

    def score(self, ev: dict[str, Any]) -> tuple[float, dict[str, float]]:
        """(score, stage seconds) for one validated event."""
        import numpy as np

        t0 = time.perf_counter()
        row = {k: ev[k] for k in self.join_keys}
        online = self.store.get_online_features(features=self.refs, entity_rows=[row]).to_dict()
        values: dict[str, float] = {}
        for name in self.names:
            v = online.get(name, [None])[0]
            if isinstance(v, str):
                vocab = self.vocab.get(name, [])
                values[name] = float(vocab.index(v)) if v in vocab else math.nan
            elif v is None:
                values[name] = math.nan
            else:
                values[name] = float(v)
        cols: dict[str, Any] = {k: np.array([ev[k]]) for k in self.spec.event_inputs}
        # Online inputs go in as the model sees them: numbers, strings as vocabulary codes.
        for k in self.spec.online_inputs:
            cols[k] = np.array([values.get(k, math.nan)], dtype=np.float64)
        for k, arr in self.request.compute(cols).items():
            values[k] = float(arr[0])
        t1 = time.perf_counter()
        x = np.array([[values.get(f, math.nan) for f in self.model_features]])
        # One thread: OpenMP fan-out on a single row only adds overhead (kind to the baseline).
        score = float(self.booster.predict(x, num_threads=1)[0])
        t2 = time.perf_counter()
        return score, {"features": t1 - t0, "score": t2 - t1}

    def outcome(self, score: float) -> str:
        """Fixed score bands (fraud) or a price decision (pricing)."""
        if self.pipeline != "fraud":
            return "price"
        if score >= self.decline_above:
            return "decline"
        return "review" if score >= self.review_above else "approve"


def main(argv: list[str] | None = None) -> int:
    """Consume, score one event at a time, produce, commit; until SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.naive", description=__doc__)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--input", required=True, help="input topic")
    p.add_argument("--decisions", required=True, help="decisions topic")
    p.add_argument("--dead-letter", required=True, help="dead-letter topic")
    p.add_argument("--group", required=True, help="consumer group id")
    p.add_argument("--pipeline", choices=("fraud", "pricing"), default="fraud")
    p.add_argument("--repo", required=True, help="Feast repo path")
    p.add_argument("--model", required=True, help="LightGBM text model file")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--commit", choices=("async", "sync"), default="async",
                   help="offset commit per event (default async: kinder to the baseline)")
    args = p.parse_args(argv)

    from confluent_kafka import Consumer, Producer

    scorer = NaiveScorer(args.pipeline, args.repo, args.model, args.redis_url)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": args.group,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 1})
    consumer.subscribe([args.input])
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("naive worker started", flush=True)
    sync = args.commit == "sync"
    try:
        while not stop:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                continue
            fetched = time.time()
            t0 = time.perf_counter()
            raw = msg.value() or b""
            try:
                ev = json.loads(raw)
                scorer.check(ev)
            except (ValueError, TypeError) as exc:
                dead = {"pipeline": args.pipeline, "error": str(exc),
                        "payload": raw.decode("utf-8", "replace"), "failed_at": fetched}
                producer.produce(args.dead_letter, json.dumps(dead).encode(), key=msg.key())
            else:
                t1 = time.perf_counter()
                score, stages = scorer.score(ev)
                t2 = time.perf_counter()
                decision = {
                    "event_id": ev["event_id"], "pipeline": args.pipeline,
                    "key": str(ev[scorer.join_keys[0]]), "outcome": scorer.outcome(score),
                    "score": score, "decided_at": fetched, "worker_id": "naive",
                    "latency_ms": {"decode": (t1 - t0) * 1e3,
                                   "features": stages["features"] * 1e3,
                                   "score": stages["score"] * 1e3,
                                   "policy": (time.perf_counter() - t2) * 1e3},
                }
                producer.produce(args.decisions, json.dumps(decision).encode(), key=msg.key())
            producer.poll(0)
            if sync:
                consumer.commit(message=msg, asynchronous=False)
            else:
                consumer.commit(message=msg, asynchronous=True)
    finally:
        producer.flush(10)
        consumer.close()
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a subprocess
    sys.exit(main())
