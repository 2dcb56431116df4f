"""Synthetic pricing data: SKUs, competitor prices, stores, price requests, units sold.

A SKU sells ``daily`` units a day at list price; a price request quotes ``candidate_price``
against the store's ``base_price``. The label (units demanded) is Poisson around
``daily/4 x store traffic x hour/day seasonality x price_ratio ** elasticity x
(price vs cheapest competitor) ** -1.5 x promotion``, capped by stock. 5% of SKUs have no
competitor data at all (missing entities in that view).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from features.request import RequestFeatures, encode_strings, request_spec
from features.synthetic.common import (
    Gen,
    Step,
    Tables,
    codes_to_str,
    lookup,
    model_features,
    training_table,
    ts_array,
    view_table,
)

__all__ = ["SKU_ID_BASE", "build"]

F64 = npt.NDArray[np.float64]
SKU_ID_BASE = 500_000
# sku category -> (typical list price, elasticity centre)
SKU_CATEGORIES = {
    "grocery": (4.0, -2.2), "beverages": (3.0, -2.5), "household": (8.0, -1.8),
    "personal_care": (9.0, -1.6), "electronics": (180.0, -1.2), "apparel": (35.0, -1.5),
    "toys": (25.0, -1.4), "home": (45.0, -1.3), "garden": (30.0, -1.1),
    "sports": (55.0, -1.3), "books": (15.0, -0.9), "pet": (20.0, -1.7),
}  # fmt: skip


def build(
    gen: Gen, vocab: dict[str, list[str]], n_skus: int, n_stores: int, n_rows: int, step: Step
) -> tuple[Tables, float]:
    """All pricing tables (views, events, training set) and the mean label."""
    rng = gen.rng
    cats = vocab["sku_category"]
    regions = vocab["store_region"]

    step("skus")
    sku_ids = np.arange(n_skus, dtype=np.int64) + SKU_ID_BASE
    cat = rng.choice(len(cats), n_skus)
    info = np.array([SKU_CATEGORIES[c] for c in cats])
    list_price = np.round(info[cat, 0] * rng.lognormal(0.0, 0.5, n_skus), 2).clip(0.5)
    elasticity = np.clip(info[cat, 1] + rng.normal(0.0, 0.3, n_skus), -4.0, -0.3)
    daily = rng.lognormal(1.5, 1.0, n_skus)  # units per day at list price, chain-wide
    promo = rng.random(n_skus) < 0.1
    sold28 = rng.poisson(daily * 28).astype(np.int64)
    sold7 = rng.binomial(sold28, 0.25).astype(np.int64)
    sold1 = rng.binomial(sold7, 1 / 7).astype(np.int32)
    stock = rng.poisson(daily * rng.uniform(2.0, 20.0, n_skus)).astype(np.int32)
    sku_demand = view_table(
        {"sku_id": sku_ids},
        {
            "units_sold_1d": sold1, "units_sold_7d": sold7, "units_sold_28d": sold28,
            "elasticity": elasticity, "stock_level": stock,
            "list_price": list_price.astype(np.float32),
            "sku_category": codes_to_str(cat, cats), "on_promotion": promo,
        },
        {
            "sku_id": pa.int64(), "units_sold_1d": pa.int32(), "units_sold_7d": pa.int64(),
            "units_sold_28d": pa.int64(), "elasticity": pa.float64(), "stock_level": pa.int32(),
            "list_price": pa.float32(), "sku_category": pa.string(), "on_promotion": pa.bool_(),
        },
        gen.snapshot_times(n_skus),
    )  # fmt: skip

    step("competitors + stores")
    has_comp = rng.random(n_skus) >= 0.05  # 5% of SKUs have no competitor data at all
    comp_mean = list_price * rng.lognormal(0.0, 0.08, n_skus)
    comp_min = comp_mean * rng.uniform(0.85, 0.98, n_skus)
    comp_n = rng.integers(1, 9, n_skus).astype(np.int32)
    comp_idx = np.flatnonzero(has_comp)
    comp_ts = gen.snapshot_times(len(comp_idx))
    competitor_prices = view_table(
        {"sku_id": sku_ids[comp_idx]},
        {"comp_price_min": comp_min[comp_idx],
         "comp_price_mean": comp_mean[comp_idx].astype(np.float32),
         "comp_count": comp_n[comp_idx]},
        {"sku_id": pa.int64(), "comp_price_min": pa.float64(), "comp_price_mean": pa.float32(),
         "comp_count": pa.int32()},
        comp_ts,
    )
    scraped = comp_ts - rng.uniform(0, 43200.0, len(comp_idx)).round()
    competitor_prices = competitor_prices.append_column("comp_updated_at", ts_array(scraped))
    store_ids = np.array([f"s{i:04d}" for i in range(n_stores)], dtype=object)
    region = rng.choice(len(regions), n_stores)
    traffic = rng.lognormal(0.0, 0.4, n_stores).astype(np.float32)
    size = rng.integers(300, 12000, n_stores).astype(np.int32)
    outlet = rng.random(n_stores) < 0.1
    store_profile = view_table(
        {"store_id": store_ids},
        {"store_region": codes_to_str(region, regions), "store_traffic_index": traffic,
         "store_size_sqm": size, "store_is_outlet": outlet},
        {"store_id": pa.string(), "store_region": pa.string(), "store_traffic_index": pa.float32(),
         "store_size_sqm": pa.int32(), "store_is_outlet": pa.bool_()},
        gen.snapshot_times(n_stores),
    )  # fmt: skip

    step("events")
    sku_i = rng.choice(n_skus, n_rows, p=daily / daily.sum())
    store_i = rng.choice(n_stores, n_rows, p=traffic / traffic.sum())
    t = np.sort(gen.event_times(n_rows))
    base = np.round(list_price[sku_i] * np.where(outlet[store_i], 0.9, 1.0), 2).clip(0.01)
    cand = np.round(base * np.exp(rng.normal(0.0, 0.12, n_rows)).clip(0.6, 1.5), 2).clip(0.01)
    events = pa.table({
        "event_id": pa.array([f"pr-{i:09d}" for i in range(n_rows)], type=pa.string()),
        "sku_id": pa.array(sku_ids[sku_i]),
        "store_id": pa.array(store_ids[store_i], type=pa.string()),
        "base_price": pa.array(base), "candidate_price": pa.array(cand),
        "event_time": pa.array(t),
    })  # fmt: skip

    step("features")
    nan = np.nan
    online: dict[str, F64] = {
        "units_sold_1d": sold1[sku_i].astype(np.float64),
        "units_sold_7d": sold7[sku_i].astype(np.float64),
        "units_sold_28d": sold28[sku_i].astype(np.float64),
        "elasticity": elasticity[sku_i], "stock_level": stock[sku_i].astype(np.float64),
        "list_price": list_price.astype(np.float32)[sku_i].astype(np.float64),
        "sku_category": encode_strings(codes_to_str(cat[sku_i], cats), lookup(cats)),
        "on_promotion": promo[sku_i].astype(np.float64),
        "comp_price_min": np.where(has_comp[sku_i], comp_min[sku_i], nan),
        "comp_price_mean": np.where(has_comp[sku_i], comp_mean.astype(np.float32)[sku_i], nan),
        "comp_count": np.where(has_comp[sku_i], comp_n[sku_i], nan),
        "store_region": encode_strings(codes_to_str(region[store_i], regions), lookup(regions)),
        "store_traffic_index": traffic[store_i].astype(np.float64),
        "store_size_sqm": size[store_i].astype(np.float64),
        "store_is_outlet": outlet[store_i].astype(np.float64),
    }  # fmt: skip
    rf = RequestFeatures("pricing", vocab)
    req = rf.compute({**{n: events.column(n).to_numpy() for n in rf.spec.event_inputs}, **online})

    step("labels")
    mu = _expected_units(req, daily[sku_i], traffic[store_i].astype(np.float64),
                         elasticity[sku_i], promo[sku_i])  # fmt: skip
    label = np.minimum(rng.poisson(mu), np.maximum(stock[sku_i], 0)).astype(np.float64)

    feats = {name: online[name] for name in model_features("pricing")} | req
    training = training_table(
        {"event_id": events.column("event_id"), "sku_id": events.column("sku_id"),
         "store_id": events.column("store_id"), "event_time": events.column("event_time")},
        feats, label,
    )  # fmt: skip
    meta = {
        "label": "label",
        "features": list(feats),
        "categorical": ["sku_category", "store_region", *request_spec("pricing").categorical],
        "objective": "regression",
    }
    tables: Tables = {
        "sku_demand": (sku_demand, None), "competitor_prices": (competitor_prices, None),
        "store_profile": (store_profile, None), "events": (events, None),
        "training": (training, meta),
    }  # fmt: skip
    return tables, float(label.mean())


def _expected_units(
    req: dict[str, F64], daily: F64, traffic: F64, elasticity: F64, promo: npt.NDArray[np.bool_]
) -> F64:
    """Mean units demanded: demand curve x competitor pressure x seasonality x traffic."""
    hour, dow = req["hour_of_day"], req["day_of_week"]
    season = (1.0 + 0.35 * np.sin((hour - 11.0) / 24.0 * 2 * np.pi)) * np.where(dow >= 5, 1.3, 1.0)
    vs_comp = req["price_vs_comp_min"]
    comp_pressure = np.where(np.isnan(vs_comp), 1.0, np.clip(vs_comp, 0.5, 2.0) ** -1.5)
    curve = req["price_ratio"] ** elasticity  # elasticity < 0: dearer sells less
    return np.asarray(
        daily / 4.0 * traffic * season * curve * comp_pressure * np.where(promo, 1.4, 1.0),
        dtype=np.float64,
    )
