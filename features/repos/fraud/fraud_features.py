"""Feast definitions of the fraud pipeline: cards, merchants and their feature views.

Offline parquet files live in the repo's data dir (``$STREAMSCORE_HOME/data/fraud`` unless
``repo.json`` overrides it), written by ``streamscore features generate``. String
features are encoded for the model with ``vocab.json`` (code = index in the list).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

from features.repo import repo_data_dir

DATA_DIR = repo_data_dir(Path(__file__).resolve().parent)

card = Entity(
    name="card",
    join_keys=["card_id"],
    value_type=ValueType.INT64,
    description="A payment card (PAN token).",
)
merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.STRING,
    description="A merchant account, e.g. 'm000042'.",
)

card_history_source = FileSource(
    name="card_history_source",
    path=str(DATA_DIR / "card_history.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
merchant_risk_source = FileSource(
    name="merchant_risk_source",
    path=str(DATA_DIR / "merchant_risk.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
card_velocity_batch_source = FileSource(
    name="card_velocity_batch_source",
    path=str(DATA_DIR / "card_velocity.parquet"),
    timestamp_field="event_timestamp",
)
# The worker pushes velocity updates as events arrive (features.push); the parquet file
# above is the batch side Feast requires for backfills and historical retrieval.
card_velocity_push = PushSource(
    name="card_velocity_push",
    batch_source=card_velocity_batch_source,
)

card_history = FeatureView(
    name="card_history",
    entities=[card],
    ttl=timedelta(days=7),
    schema=[
        Field(name="avg_amount_30d", dtype=Float64),
        Field(name="std_amount_30d", dtype=Float32),
        Field(name="spend_24h", dtype=Float64),
        Field(name="txn_count_1h", dtype=Int32),
        Field(name="txn_count_24h", dtype=Int32),
        Field(name="txn_count_7d", dtype=Int64),
        Field(name="account_age_days", dtype=Int32),
        Field(name="chargeback_count", dtype=Int64),
        Field(name="home_country", dtype=String),
        Field(name="is_premium", dtype=Bool),
        Field(name="last_chargeback_at", dtype=UnixTimestamp),
    ],
    online=True,
    source=card_history_source,
    description="Daily batch profile of a card's spending history.",
)

merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    ttl=timedelta(days=7),
    schema=[
        Field(name="merchant_fraud_rate_90d", dtype=Float64),
        Field(name="merchant_chargeback_rate", dtype=Float32),
        Field(name="merchant_avg_ticket", dtype=Float32),
        Field(name="merchant_txn_volume_30d", dtype=Int64),
        Field(name="merchant_age_days", dtype=Int32),
        Field(name="merchant_category", dtype=String),
        Field(name="merchant_country", dtype=String),
        Field(name="merchant_is_high_risk", dtype=Bool),
    ],
    online=True,
    source=merchant_risk_source,
    description="Daily batch risk profile of a merchant.",
)

card_velocity = FeatureView(
    name="card_velocity",
    entities=[card],
    # Short TTL: velocity is only meaningful while fresh; a stale count is no count.
    ttl=timedelta(hours=2),
    schema=[
        Field(name="velocity_count_10m", dtype=Int64),
        Field(name="velocity_sum_10m", dtype=Float64),
        Field(name="velocity_count_1h", dtype=Int64),
        Field(name="velocity_sum_1h", dtype=Float64),
    ],
    online=True,
    source=card_velocity_push,
    description="Card transaction count and amount over sliding windows, pushed by the worker.",
)

FEATURE_VIEWS = [card_history, merchant_risk, card_velocity]
ENTITIES = [card, merchant]
# The model's online inputs, in model order: every feature except raw timestamps.
MODEL_FEATURE_REFS = [
    f"{view.name}:{field.name}"
    for view in FEATURE_VIEWS
    for field in view.features
    if field.dtype != UnixTimestamp
]
