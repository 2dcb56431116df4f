"""Synthetic data: schemas match the Feast repos, training rows are the features the
worker would compute (no skew), labels depend on features, and generation is seeded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

from features.exceptions import FeatureDataError
from features.repo import feature_refs, feature_views, load_vocab, repo_path
from features.request import RequestFeatures, request_spec
from features.synthetic import generate, window_velocity

NOW = 1_795_000_000.0  # fixed clock: 2026-11-18
ARROW_OF = {
    Int64: pa.int64(), Int32: pa.int32(), Float64: pa.float64(), Float32: pa.float32(),
    String: pa.string(), Bool: pa.bool_(), UnixTimestamp: pa.timestamp("us", tz="UTC"),
}  # fmt: skip
FRAUD_EVENT_FIELDS = ["event_id", "card_id", "merchant_id", "amount", "currency", "country",
                      "channel", "mcc", "event_time"]  # fmt: skip
PRICING_EVENT_FIELDS = ["event_id", "sku_id", "store_id", "base_price", "candidate_price",
                        "event_time"]  # fmt: skip


@pytest.fixture(scope="module")
def fraud_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fraud")
    generate("fraud", out, cards=3000, merchants=300, rows=30_000, now=NOW, progress=False)
    return out


@pytest.fixture(scope="module")
def pricing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pricing")
    generate("pricing", out, skus=800, stores=20, rows=20_000, now=NOW, progress=False)
    return out


def _dirs(request: pytest.FixtureRequest, pipeline: str) -> Path:
    return Path(request.getfixturevalue(f"{pipeline}_dir"))


@pytest.mark.parametrize("pipeline", ["fraud", "pricing"])
def test_view_files_match_feast_schemas(request: pytest.FixtureRequest, pipeline: str) -> None:
    out = _dirs(request, pipeline)
    for view in feature_views(repo_path(pipeline)):
        schema = pq.read_schema(out / Path(view.batch_source.path).name)
        for join_key in view.join_keys:
            assert join_key in schema.names
        for feat in view.features:
            assert schema.field(feat.name).type == ARROW_OF[feat.dtype], (view.name, feat.name)
        ts = pq.read_table(out / Path(view.batch_source.path).name,
                           columns=["event_timestamp"]).column(0)  # fmt: skip
        seconds = ts.cast(pa.int64()).to_numpy() / 1e6
        # inside the view's TTL at generation time, and not in the future
        assert seconds.max() <= NOW
        assert seconds.min() >= NOW - view.ttl.total_seconds()


def test_training_sidecar_and_event_fields(fraud_dir: Path, pricing_dir: Path) -> None:
    for pipeline, out, fields, objective in (
        ("fraud", fraud_dir, FRAUD_EVENT_FIELDS, "binary"),
        ("pricing", pricing_dir, PRICING_EVENT_FIELDS, "regression"),
    ):
        meta = json.loads((out / "training.json").read_text())
        online = [ref.split(":", 1)[1] for ref in feature_refs(pipeline)]
        assert meta["features"] == online + list(request_spec(pipeline).outputs)
        assert meta["label"] == "label" and meta["objective"] == objective
        assert set(meta["categorical"]) <= set(meta["features"])
        vocab = load_vocab(repo_path(pipeline))
        training = pd.read_parquet(out / "training.parquet")
        assert set(meta["features"]) | {"label"} <= set(training.columns)
        for name in meta["categorical"]:  # codes are vocabulary indices
            codes = training[name].dropna()
            assert codes.between(0, len(vocab[name]) - 1).all() and (codes % 1 == 0).all()
        events = pq.read_table(out / "events.parquet")
        assert events.column_names[: len(fields)] == fields
        assert np.all(np.diff(events.column("event_time").to_numpy()) >= 0)


def test_fraud_training_equals_worker_features(fraud_dir: Path) -> None:
    """Rebuild each training row the way the worker will: look the entities up in the
    offline snapshot, encode strings, run the request-time features, compare."""
    vocab = load_vocab(repo_path("fraud"))
    training = pd.read_parquet(fraud_dir / "training.parquet")
    events = pd.read_parquet(fraud_dir / "events.parquet")
    cards = pd.read_parquet(fraud_dir / "card_history.parquet").set_index("card_id")
    merchants = pd.read_parquet(fraud_dir / "merchant_risk.parquet").set_index("merchant_id")
    assert (events["event_id"].to_numpy() == training["event_id"].to_numpy()).all()
    card = cards.loc[events["card_id"]].reset_index()
    merch = merchants.loc[events["merchant_id"]].reset_index()
    # every event happens after its entities' snapshot (point in time correct)
    assert (card["event_timestamp"].astype("int64") / 1e9 < events["event_time"]).all()
    assert (merch["event_timestamp"].astype("int64") / 1e9 < events["event_time"]).all()

    def codes(values: Any, name: str) -> np.ndarray:
        lut = {v: i for i, v in enumerate(vocab[name])}
        return np.array([lut.get(v, np.nan) for v in values], dtype=float)

    online = {
        "avg_amount_30d": card["avg_amount_30d"].to_numpy(float),
        "std_amount_30d": card["std_amount_30d"].to_numpy(float),
        "home_country": codes(card["home_country"], "home_country"),
        "merchant_country": codes(merch["merchant_country"], "merchant_country"),
        "merchant_category": codes(merch["merchant_category"], "merchant_category"),
        "is_premium": card["is_premium"].to_numpy(float),
        "txn_count_7d": card["txn_count_7d"].to_numpy(float),
        "merchant_fraud_rate_90d": merch["merchant_fraud_rate_90d"].to_numpy(float),
    }
    for name, values in online.items():
        np.testing.assert_array_equal(training[name].to_numpy(), values, err_msg=name)
    rf = RequestFeatures("fraud", vocab)
    req = rf.compute({**{n: events[n].to_numpy() for n in rf.spec.event_inputs}, **online})
    for name, values in req.items():
        np.testing.assert_array_equal(training[name].to_numpy(), values, err_msg=name)
    # velocity = the card's earlier events in the window, from the events themselves
    cnt, tot = window_velocity(events["card_id"].to_numpy(), events["event_time"].to_numpy(),
                               events["amount"].to_numpy(), 600.0)  # fmt: skip
    np.testing.assert_array_equal(training["velocity_count_10m"].to_numpy(), cnt)
    np.testing.assert_allclose(training["velocity_sum_10m"].to_numpy(), tot, rtol=1e-9, atol=1e-6)


def test_window_velocity_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    n = 400
    ent = rng.integers(0, 12, n)
    t = np.round(rng.uniform(0, 5000, n))  # rounding makes ties
    amount = rng.uniform(1, 100, n)
    cnt, tot = window_velocity(ent, t, amount, 600.0)
    order = np.lexsort((t, ent))
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    for i in range(n):
        earlier = (ent == ent[i]) & (t >= t[i] - 600.0) & (t <= t[i]) & (rank < rank[i])
        assert cnt[i] == earlier.sum()
        assert tot[i] == pytest.approx(amount[earlier].sum())


def test_labels_depend_on_features(fraud_dir: Path, pricing_dir: Path) -> None:
    fraud = pd.read_parquet(fraud_dir / "training.parquet")
    meta = json.loads((fraud_dir / "training.json").read_text())
    assert 0.01 <= fraud["label"].mean() <= 0.03
    burst = fraud["velocity_count_10m"] >= 2
    assert fraud.loc[burst, "label"].mean() > 4 * fraud.loc[~burst, "label"].mean()
    half = len(fraud) // 2
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 15, "min_data_in_leaf": 40,
         "num_threads": 1},  # one thread: OpenMP spinning on shared cores is slow
        lgb.Dataset(fraud[meta["features"]][:half], fraud["label"][:half],
                    categorical_feature=meta["categorical"]),
        num_boost_round=60,
    )  # fmt: skip
    score = booster.predict(fraud[meta["features"]][half:])
    y = fraud["label"].to_numpy()[half:]
    ranks = pd.Series(score).rank().to_numpy()
    auc = (ranks[y == 1].mean() - (y.sum() + 1) / 2) / (len(y) - y.sum())
    assert auc > 0.75

    pricing = pd.read_parquet(pricing_dir / "training.parquet")
    assert pricing["label"].min() >= 0 and pricing["label"].mean() > 1
    # same SKU, higher price -> fewer units (the demand curve)
    cheap = pricing["price_ratio"] < 0.9
    dear = pricing["price_ratio"] > 1.1
    per_unit = pricing["label"] / pricing["units_sold_28d"].clip(lower=1)
    assert per_unit[cheap].mean() > 1.3 * per_unit[dear].mean()


def test_seeded_and_validated(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = dict(cards=200, merchants=30, rows=1500, now=NOW, progress=False)
    generate("fraud", tmp_path / "a", seed=1, **kwargs)
    generate("fraud", tmp_path / "b", seed=1, **kwargs)
    generate("fraud", tmp_path / "c", seed=2, **kwargs)
    a, b, c = (pq.read_table(tmp_path / d / "training.parquet") for d in "abc")
    assert a.equals(b)
    assert not a.equals(c)
    with pytest.raises(FeatureDataError):
        generate("ads", tmp_path / "x")
    with pytest.raises(FeatureDataError):
        generate("fraud", tmp_path / "x", cards=0)
