"""Fixtures for the feature tests: small real Feast repos on the real Redis.

Each test gets its own Feast project (so its own Redis keys, which are suffixed with the
project name) in ``tmp_path``; the repo covers every scalar Feast value type plus a few
list types, with entities of every join-key type the fast reader supports.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

VOCAB = {"category": ["grocery", "travel", "games", "fuel"], "country": ["US", "FR", "DE"]}

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import (
    Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp,
)

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)

card_src = FileSource(path="data/card.parquet", timestamp_field="event_timestamp")
merchant_src = FileSource(path="data/merchant.parquet", timestamp_field="event_timestamp")
pair_src = FileSource(path="data/pair.parquet", timestamp_field="event_timestamp")
velocity_src = FileSource(path="data/velocity.parquet", timestamp_field="event_timestamp")
velocity_push = PushSource(name="velocity_push", batch_source=velocity_src)

card_history = FeatureView(
    name="card_history",
    entities=[card],
    ttl=timedelta(days={card_ttl_days}),
    schema=[
        Field(name="avg_amount", dtype=Float64),
        Field(name="txn_count_7d", dtype=Int64),
        Field(name="chargebacks", dtype=Int32),
        Field(name="risk_score", dtype=Float32),
        Field(name="is_premium", dtype=Bool),
        Field(name="country", dtype=String),
        Field(name="opened_at", dtype=UnixTimestamp),
        Field(name="recent_amounts", dtype=Array(Float64)),
        Field(name="tags", dtype=Array(String)),
        Field(name="blob", dtype=Bytes),
    ],
    source=card_src,
)

merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    ttl=timedelta(seconds=0),
    schema=[
        Field(name="fraud_rate", dtype=Float64),
        Field(name="category", dtype=String),
        Field(name="volume", dtype=Int64),
    ],
    source=merchant_src,
)

card_merchant = FeatureView(
    name="card_merchant",
    entities=[card, merchant],
    ttl=timedelta(days=30),
    schema=[Field(name="pair_count", dtype=Int64), Field(name="pair_amount", dtype=Float32)],
    source=pair_src,
)

card_velocity = FeatureView(
    name="card_velocity",
    entities=[card],
    ttl=timedelta(hours=2),
    schema=[
        Field(name="velocity_count_10m", dtype=Int64),
        Field(name="velocity_sum_10m", dtype=Float64),
        Field(name="velocity_count_1h", dtype=Int32),
        Field(name="velocity_sum_1h", dtype=Float32),
    ],
    source=velocity_push,
)
"""


@dataclass
class TestRepo:
    """A Feast repo applied to the real Redis, with the rows written to it."""

    path: Path
    project: str
    store: Any  # feast.FeatureStore
    card_ids: np.ndarray
    merchant_ids: list[str]
    vocab: dict[str, list[str]]


def _write_yaml(path: Path, project: str, redis_url: str, cluster: str | None = None) -> None:
    hostport = redis_url.split("://", 1)[-1].rstrip("/").split("/")[0]
    # a cluster: Feast's connection string lists every node host:port
    kind = "redis_cluster" if cluster is not None else "redis"
    (path / "feature_store.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: {project}
            registry: {path / "registry.db"}
            provider: local
            online_store:
              type: redis
              redis_type: {kind}
              connection_string: "{cluster or hostport}"
            offline_store:
              type: file
            entity_key_serialization_version: 3
            """
        )
    )


def build_repo(
    path: Path,
    project: str,
    redis_url: str,
    *,
    n_cards: int,
    n_merchants: int,
    seed: int = 7,
    card_ttl_days: int = 3650,
    cluster: str | None = None,
) -> TestRepo:
    """Create, apply and fill a small repo (Feast's own write path fills Redis, or the
    Redis Cluster whose nodes ``cluster`` lists)."""
    import json

    import pandas as pd

    path.mkdir(parents=True, exist_ok=True)
    (path / "data").mkdir(exist_ok=True)
    _write_yaml(path, project, redis_url, cluster)
    (path / "definitions.py").write_text(DEFINITIONS.replace("{card_ttl_days}", str(card_ttl_days)))
    (path / "vocab.json").write_text(json.dumps(VOCAB))
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC).replace(microsecond=0)

    card_ids = rng.choice(np.arange(1, 10 * n_cards), size=n_cards, replace=False).astype(np.int64)
    # values near the edges of each type, and nulls, so decoding is tested for real
    avg = rng.normal(50, 80, n_cards)
    avg[::17] = np.nan
    card = pd.DataFrame(
        {
            "card_id": card_ids,
            "avg_amount": avg,
            "txn_count_7d": rng.integers(-(2**40), 2**40, n_cards),
            "chargebacks": rng.integers(-(2**31), 2**31 - 1, n_cards).astype(np.int32),
            "risk_score": rng.random(n_cards).astype(np.float32),
            "is_premium": rng.random(n_cards) < 0.3,
            "country": rng.choice(["US", "FR", "DE", "XX", ""], n_cards),
            "opened_at": pd.to_datetime(rng.integers(1e9, 1.7e9, n_cards), unit="s", utc=True),
            "recent_amounts": [list(rng.random(int(k))) for k in rng.integers(0, 4, n_cards)],
            "tags": [["a", "b"][: int(k)] for k in rng.integers(0, 3, n_cards)],
            "blob": [bytes([int(k)]) * 3 for k in rng.integers(0, 255, n_cards)],
            "event_timestamp": [
                now - timedelta(seconds=int(s)) for s in rng.integers(0, 86400, n_cards)
            ],
        }
    )
    merchant_ids = [f"m{i:05d}" for i in rng.choice(10 * n_merchants, n_merchants, replace=False)]
    merchant = pd.DataFrame(
        {
            "merchant_id": merchant_ids,
            "fraud_rate": rng.random(n_merchants) / 10,
            "category": rng.choice(
                ["grocery", "travel", "games", "fuel", "unknown-cat"], n_merchants
            ),
            "volume": rng.integers(0, 10**9, n_merchants),
            "event_timestamp": [
                now - timedelta(seconds=int(s)) for s in rng.integers(0, 86400, n_merchants)
            ],
        }
    )
    n_pairs = min(n_cards, n_merchants)
    pair = pd.DataFrame(
        {
            "card_id": card_ids[:n_pairs],
            "merchant_id": merchant_ids[:n_pairs],
            "pair_count": rng.integers(0, 100, n_pairs),
            "pair_amount": rng.random(n_pairs).astype(np.float32) * 100,
            "event_timestamp": [now] * n_pairs,
        }
    )
    for name, df in {"card": card, "merchant": merchant, "pair": pair}.items():
        df.to_parquet(path / "data" / f"{name}.parquet")
    pd.DataFrame(
        {
            "card_id": pd.Series([], dtype="int64"),
            "velocity_count_10m": pd.Series([], dtype="int64"),
            "velocity_sum_10m": pd.Series([], dtype="float64"),
            "velocity_count_1h": pd.Series([], dtype="int32"),
            "velocity_sum_1h": pd.Series([], dtype="float32"),
            "event_timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
        }
    ).to_parquet(path / "data" / "velocity.parquet")

    store = _apply(path)
    store.write_to_online_store("card_history", card)
    store.write_to_online_store("merchant_risk", merchant)
    store.write_to_online_store("card_merchant", pair)
    return TestRepo(path, project, store, card_ids, merchant_ids, VOCAB)


def _apply(path: Path) -> Any:
    """Apply the repo's definitions the way ``feast apply`` does."""
    import importlib.util

    from feast import Entity, FeatureStore, FeatureView
    from feast.data_source import PushSource

    spec = importlib.util.spec_from_file_location(f"defs_{path.name}", path / "definitions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    import os

    cwd = os.getcwd()
    os.chdir(path)  # FileSource paths are relative to the repo
    try:
        spec.loader.exec_module(module)
        objs = [
            v for v in vars(module).values() if isinstance(v, Entity | FeatureView | PushSource)
        ]
        store = FeatureStore(repo_path=str(path))
        store.apply(objs)
    finally:
        os.chdir(cwd)
    return store


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[TestRepo]:
    """A repo shared by a test module: 1,500 cards, 300 merchants (read-only for tests)."""
    from features.repo import delete_project_keys

    project = "t" + uuid.uuid4().hex[:10]
    path = tmp_path_factory.mktemp("repo") / "repo"
    repo = build_repo(path, project, redis_url, n_cards=1500, n_merchants=300)
    yield repo
    delete_project_keys(redis_url, project)


@pytest.fixture
def feast_repo(tmp_path: Path, redis_url: str, unique_name: str) -> Iterator[TestRepo]:
    """A small repo of this test's own: 200 cards, 40 merchants."""
    from features.repo import delete_project_keys

    repo = build_repo(tmp_path / "repo", unique_name, redis_url, n_cards=200, n_merchants=40)
    yield repo
    delete_project_keys(redis_url, unique_name)
