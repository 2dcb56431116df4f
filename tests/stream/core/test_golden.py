"""The fraud and pricing pipelines' records for a fixed input set, byte for byte.

The generic core must give the same decision and dead-letter bytes as the recorded ones
(``golden/*.jsonl``) for the same input, model and clock: the pipeline files, not code
paths, make the two examples. Only the stage timings (``latency_ms``) are measured, so
they are zeroed before comparing. ``STREAMSCORE_REGOLD=1`` rewrites the files (review
the diff: a change here is a change of every user's output).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from features.online import ReadResult
from features.repo import load_vocab, repo_path
from features.request import RequestFeatures
from stream.core.pipeline import BatchCore, LoadedModel
from tests.stream.core.test_pipeline import BoosterScorer, config

GOLDEN = Path(__file__).resolve().parent / "golden"
NOW = 1_795_000_000.0
_LATENCY = re.compile(rb'"latency_ms":\{[^}]*\}')


def _train(names: list[str], X: np.ndarray, y: np.ndarray, objective: str) -> lgb.Booster:
    params = {"objective": objective, "num_leaves": 7, "verbose": -1, "num_threads": 1,
              "deterministic": True, "seed": 7}
    return lgb.train(params, lgb.Dataset(X, y, feature_name=names), 25)


class FixedReader:
    """Online features from a table keyed by the entity id: some rows missing or stale,
    one batch read as a Redis Cluster read with a node down."""

    def __init__(self, names: list[str], views: tuple[str, ...], join_key: str,
                 partial: bool = False) -> None:
        self.names, self.views, self.join_keys = names, views, (join_key,)
        self.partial = partial

    def read(self, entities, now=None):
        ids = np.asarray(next(iter(entities.values())), dtype=np.int64)
        n = ids.size
        values = np.column_stack([(ids % (7 + j)).astype(float) * 3.5 + 1.0
                                  for j in range(len(self.names))]) if self.names else \
            np.zeros((n, 0))
        present = np.column_stack([(ids + j) % 13 != 0 for j in range(len(self.views))])
        stale = np.column_stack([(ids + j) % 17 == 0 for j in range(len(self.views))])
        present &= ~stale
        age = np.where(present | stale, (ids % 50)[:, None] + 0.5, np.nan)
        values[~present.all(axis=1)] = np.nan
        if self.partial:
            down = ids % 4 == 0
            values[down] = np.nan
            present[down] = False
            stale[down] = False
            return ReadResult(values, present, stale, age, self.views, "partial",
                              "node down", down)
        return ReadResult(values, present, stale, age, self.views)


def _fraud_inputs() -> list[bytes]:
    rng = np.random.default_rng(11)
    out = []
    countries = ["US", "DE", "FR", "GB", "JP", "KP"]
    currencies = ["USD", "EUR", "EUR", "GBP", "JPY", "USD"]
    for i in range(80):
        c = int(rng.integers(0, len(countries)))
        doc = {"event_id": f"f{i}", "card_id": int(rng.integers(1, 40)),
               "merchant_id": f"m{i % 7}", "amount": round(float(rng.lognormal(6, 1.5)), 2),
               "currency": currencies[c], "country": countries[c],
               "channel": ["pos", "ecom", "atm"][i % 3], "mcc": [5411, 5812, 7995][i % 3],
               "event_time": NOW - float(rng.choice([0.01, 0.5, 0.7, 200.0]))}
        out.append(json.dumps(doc).encode())
    bad = [b"{oops", b"", json.dumps({"event_id": "x", "card_id": 1}).encode(),
           json.dumps({"event_id": "neg", "card_id": 2, "merchant_id": "m", "amount": -3,
                       "currency": "USD", "country": "US", "channel": "pos", "mcc": 1,
                       "event_time": NOW}).encode(),
           json.dumps({"event_id": "fut", "card_id": 3, "merchant_id": "m", "amount": 3,
                       "currency": "USD", "country": "US", "channel": "pos", "mcc": 1,
                       "event_time": NOW + 4000}).encode(),
           json.dumps({"event_id": "cur", "card_id": 4, "merchant_id": "m", "amount": 3,
                       "currency": "QQQ", "country": "US", "channel": "pos", "mcc": 1,
                       "event_time": NOW}).encode()]
    for j, b in enumerate(bad):
        out.insert(7 + 11 * j, b)
    return out


def _pricing_inputs() -> list[bytes]:
    rng = np.random.default_rng(12)
    out = []
    for i in range(60):
        base = round(float(rng.uniform(2, 80)), 2)
        doc = {"event_id": f"p{i}", "sku_id": int(rng.integers(1, 30)), "store_id": f"s{i % 4}",
               "base_price": base, "candidate_price": round(base * float(rng.uniform(0.9, 1.1)), 2),
               "event_time": NOW - float(rng.choice([0.01, 0.3, 200.0]))}
        out.append(json.dumps(doc).encode())
    out.insert(5, b"[1,2]")
    out.insert(30, json.dumps({"event_id": "q", "sku_id": 1, "store_id": "s", "base_price": -1,
                               "candidate_price": 1, "event_time": NOW}).encode())
    return out


def _fraud_core(partial: bool) -> BatchCore:
    names = ["amount_usd", "channel", "country", "hour_of_day", "mcc", "avg_amount_30d",
             "amount_to_avg", "is_foreign"]
    request = RequestFeatures("fraud", load_vocab(repo_path("fraud")))
    rng = np.random.default_rng(3)
    n = 2000
    X = np.column_stack([rng.lognormal(5, 1.4, n), rng.integers(0, 3, n), rng.integers(0, 6, n),
                         rng.uniform(0, 24, n), rng.choice([5411, 5812, 7995], n),
                         rng.uniform(1, 30, n), rng.uniform(0, 20, n), rng.integers(0, 2, n)])
    y = ((X[:, 0] > 300) ^ (rng.random(n) < 0.1)).astype(float)
    champion = _train(names, X, y, "binary")
    challenger = _train(names, X, (X[:, 6] > 5).astype(float), "binary")
    online = ["avg_amount_30d", "std_amount_30d", "home_country", "merchant_country"]
    reader = FixedReader(online, ("card", "merchant", "velocity"), "card_id", partial)
    cfg = config("fraud", budget_ms=100_000)
    return BatchCore(cfg, LoadedModel("fraud", "3", "ab" * 32, BoosterScorer(champion)),
                     reader=reader, request=request, online_names=online,
                     optional_views=["velocity"], worker_id="w-golden",
                     challenger=LoadedModel("fraud", "4", "cd" * 32, BoosterScorer(challenger)))


def _pricing_core() -> BatchCore:
    names = ["price_ratio", "hour_of_day", "base_price", "price_vs_comp_min"]
    request = RequestFeatures("pricing", load_vocab(repo_path("pricing")))
    rng = np.random.default_rng(4)
    n = 2000
    X = np.column_stack([rng.uniform(0.8, 1.2, n), rng.uniform(0, 24, n), rng.uniform(2, 80, n),
                         rng.uniform(0.7, 1.4, n)])
    y = 10.0 * np.exp(-5.0 * (X[:, 0] - 0.8)) + X[:, 3]
    booster = _train(names, X, y, "regression")
    online = ["comp_price_min", "comp_price_mean", "list_price"]
    reader = FixedReader(online, ("sku", "competitor"), "sku_id")
    cfg = config("pricing", budget_ms=100_000)
    return BatchCore(cfg, LoadedModel("pricing", "2", "ef" * 32, BoosterScorer(booster)),
                     reader=reader, request=request, online_names=online, worker_id="w-golden")


def _outputs(core: BatchCore, payloads: list[bytes]) -> bytes:
    lines = []
    for size in (1, 13, len(payloads)):  # batch boundaries must not change a byte
        for start in range(0, len(payloads), size):
            chunk = payloads[start:start + size]
            sources = [("in", 1, start + i) for i in range(len(chunk))]
            keys = [b"k%d" % (start + i) for i in range(len(chunk))]
            res = core.process(chunk, keys=keys, sources=sources, now=NOW)
            lines += [b"D " + (k or b"") + b" " + _LATENCY.sub(b'"latency_ms":{}', v)
                      for k, v in res.decisions]
            lines += [b"X " + (k or b"") + b" " + v for k, v in res.dead_letters]
        if size == 1:
            lines.append(b"--")
    return b"\n".join(lines) + b"\n"


CASES = {
    "fraud": lambda: _outputs(_fraud_core(False), _fraud_inputs()),
    "fraud_partial": lambda: _outputs(_fraud_core(True), _fraud_inputs()),
    "pricing": lambda: _outputs(_pricing_core(), _pricing_inputs()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_records_are_byte_identical_to_the_recorded_ones(case):
    got = CASES[case]()
    path = GOLDEN / f"{case}.jsonl"
    if os.environ.get("STREAMSCORE_REGOLD") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(got)
    want = path.read_bytes()
    assert got.count(b"\n") == want.count(b"\n")
    for g, w in zip(got.splitlines(), want.splitlines(), strict=True):
        assert g == w
