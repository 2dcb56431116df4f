"""Feast definitions of the pricing pipeline: SKUs, stores, demand and competitor prices.

Offline parquet files live in the repo's data dir (``$STREAMSCORE_HOME/data/pricing``
unless ``repo.json`` overrides it), written by ``streamscore features generate``. String
features are encoded for the model with ``vocab.json`` (code = index in the list).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

from features.repo import repo_data_dir

DATA_DIR = repo_data_dir(Path(__file__).resolve().parent)

sku = Entity(
    name="sku",
    join_keys=["sku_id"],
    value_type=ValueType.INT64,
    description="A stock-keeping unit (product).",
)
store = Entity(
    name="store",
    join_keys=["store_id"],
    value_type=ValueType.STRING,
    description="A physical or online store, e.g. 's0007'.",
)

sku_demand_source = FileSource(
    name="sku_demand_source",
    path=str(DATA_DIR / "sku_demand.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
competitor_prices_source = FileSource(
    name="competitor_prices_source",
    path=str(DATA_DIR / "competitor_prices.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
store_profile_source = FileSource(
    name="store_profile_source",
    path=str(DATA_DIR / "store_profile.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

sku_demand = FeatureView(
    name="sku_demand",
    entities=[sku],
    ttl=timedelta(days=7),
    schema=[
        Field(name="units_sold_1d", dtype=Int32),
        Field(name="units_sold_7d", dtype=Int64),
        Field(name="units_sold_28d", dtype=Int64),
        Field(name="elasticity", dtype=Float64),
        Field(name="stock_level", dtype=Int32),
        Field(name="list_price", dtype=Float32),
        Field(name="sku_category", dtype=String),
        Field(name="on_promotion", dtype=Bool),
    ],
    online=True,
    source=sku_demand_source,
    description="Daily demand profile of a SKU: recent sales, elasticity estimate, stock.",
)

competitor_prices = FeatureView(
    name="competitor_prices",
    entities=[sku],
    ttl=timedelta(days=2),
    schema=[
        Field(name="comp_price_min", dtype=Float64),
        Field(name="comp_price_mean", dtype=Float32),
        Field(name="comp_count", dtype=Int32),
        Field(name="comp_updated_at", dtype=UnixTimestamp),
    ],
    online=True,
    source=competitor_prices_source,
    description="Scraped competitor prices of a SKU.",
)

store_profile = FeatureView(
    name="store_profile",
    entities=[store],
    ttl=timedelta(days=30),
    schema=[
        Field(name="store_region", dtype=String),
        Field(name="store_traffic_index", dtype=Float32),
        Field(name="store_size_sqm", dtype=Int32),
        Field(name="store_is_outlet", dtype=Bool),
    ],
    online=True,
    source=store_profile_source,
    description="Static-ish profile of a store.",
)

FEATURE_VIEWS = [sku_demand, competitor_prices, store_profile]
ENTITIES = [sku, store]
# The model's online inputs, in model order: every feature except raw timestamps.
MODEL_FEATURE_REFS = [
    f"{view.name}:{field.name}"
    for view in FEATURE_VIEWS
    for field in view.features
    if field.dtype != UnixTimestamp
]
