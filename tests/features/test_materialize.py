"""Apply + materialize through the Feast SDK into the real Redis, read back with the SDK."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.cli import register  # noqa: F401  (the CLI module must import cheaply)
from features.exceptions import FeatureDataError, FeatureRepoError
from features.materialize import _chunk_edges, apply_repo, materialize_repo
from features.repo import delete_project_keys, feature_views, open_store, prepare_repo
from features.synthetic import generate


def test_chunk_edges_cover_the_window_without_splitting_ties() -> None:
    rng = np.random.default_rng(5)
    ts = np.round(rng.uniform(1000, 2000, 5000))  # many ties
    ts = np.concatenate([ts, np.full(300, 1500.0)])  # one timestamp holding 300 rows
    plan = _chunk_edges(ts, 900.0, 1900.0, 250)
    assert plan[0][0] == 900.0 and plan[-1][1] == 1900.0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
    inside = ts[(ts >= 900) & (ts < 1900)]
    assert sum(n for _, _, n in plan) == inside.size
    for lo, hi, n in plan:
        assert n == ((inside >= lo) & (inside < hi)).sum()
        # only a window holding a single over-full timestamp may exceed the bound
        assert n <= 250 or np.unique(inside[(inside >= lo) & (inside < hi)]).size == 1
    assert len(plan) > 15
    assert _chunk_edges(ts, 0.0, 10.0, 250) == [(0.0, 10.0, 0)]


@pytest.fixture
def fraud_repo(tmp_path: Path, redis_url: str, unique_name: str) -> Iterator[Path]:
    data = tmp_path / "data"
    generate("fraud", data, cards=400, merchants=40, rows=2000, progress=False)
    repo = prepare_repo("fraud", tmp_path, project=unique_name, redis_url=redis_url,
                        data_dir=data)  # fmt: skip
    yield repo
    delete_project_keys(redis_url, unique_name)


def _expected(df: pd.DataFrame, key: str, ids: list[Any], name: str) -> list[Any]:
    latest = df.sort_values("event_timestamp").drop_duplicates(key, keep="last").set_index(key)
    out = []
    for i in ids:
        if i not in latest.index:
            out.append(None)
            continue
        value = latest.at[i, name]
        if isinstance(value, pd.Timestamp):
            value = value.to_pydatetime()
        elif value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
            value = None
        elif isinstance(value, np.generic):
            value = value.item()
        out.append(value)
    return out


def _same(got: list[Any], want: list[Any], name: str) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, float) and g is not None:
            assert g == pytest.approx(w, rel=1e-6), name  # Float32 round trip
        elif isinstance(w, datetime) and g is not None:
            assert g.timestamp() == w.timestamp(), name
        else:
            assert g == w, name


@pytest.mark.integration
def test_apply_materialize_read_back(fraud_repo: Path, redis_url: str, unique_name: str) -> None:
    with pytest.raises(FeatureRepoError, match="apply"):
        materialize_repo(fraud_repo, progress=False)
    applied = apply_repo(fraud_repo)
    assert applied.project == unique_name
    assert applied.feature_views == ["card_history", "merchant_risk", "card_velocity"]
    result = materialize_repo(fraud_repo, chunk_rows=150, progress=False)
    by_view = {v.name: v for v in result.views}
    assert by_view["card_history"].rows == 400 and by_view["card_history"].chunks >= 3
    assert by_view["merchant_risk"].rows == 40
    assert result.rows_per_s > 0 and result.peak_rss_mib > 0

    data = fraud_repo.parent / "data"
    cards = pd.read_parquet(data / "card_history.parquet")
    merchants = pd.read_parquet(data / "merchant_risk.parquet")
    velocity = pd.read_parquet(data / "card_velocity.parquet")
    rng = np.random.default_rng(0)
    card_ids = [int(c) for c in rng.choice(cards["card_id"], 60, replace=False)] + [1, 2]
    merchant_ids = [str(m) for m in rng.choice(merchants["merchant_id"], 60)] + ["nope", "m9"]
    views = feature_views(fraud_repo)
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    store = open_store(fraud_repo)
    got = store.get_online_features(
        features=refs,
        entity_rows=[{"card_id": c, "merchant_id": m} for c, m in zip(card_ids, merchant_ids,
                                                                        strict=True)],
    ).to_dict()  # fmt: skip
    sources = {"card_history": (cards, "card_id", card_ids),
               "merchant_risk": (merchants, "merchant_id", merchant_ids),
               "card_velocity": (velocity, "card_id", card_ids)}  # fmt: skip
    for view in views:
        df, key, ids = sources[view.name]
        for feat in view.features:
            _same(got[feat.name], _expected(df, key, ids, feat.name), f"{view.name}:{feat.name}")
    assert got["avg_amount_30d"][-1] is None and got["merchant_category"][-1] is None
    assert any(v is None for v in got["last_chargeback_at"][:60])  # null timestamps survive
    _training_matches_feast_point_in_time_join(store, data, fraud_repo)


def _training_matches_feast_point_in_time_join(store: Any, data: Path, repo: Path) -> None:
    """The training set's entity features are what Feast's own point-in-time join gives."""
    import warnings

    from features.repo import load_vocab

    events = pd.read_parquet(data / "events.parquet")
    training = pd.read_parquet(data / "training.parquet").set_index("event_id")
    entity_df = pd.DataFrame({
        "event_id": events["event_id"], "card_id": events["card_id"],
        "merchant_id": events["merchant_id"],
        "event_timestamp": pd.to_datetime(events["event_time"], unit="s", utc=True),
    })  # fmt: skip
    refs = [f"{v.name}:{f.name}" for v in feature_views(repo) if v.name != "card_velocity"
            for f in v.features if f.name in training.columns]  # fmt: skip
    assert len(refs) == 18
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dask's nanosecond notices
        hist = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    hist = hist.set_index("event_id").loc[training.index]
    vocab = load_vocab(repo)
    for ref in refs:
        name = ref.split(":", 1)[1]
        col = hist[name]
        if name in vocab:
            lut = {v: i for i, v in enumerate(vocab[name])}
            col = col.map(lambda v, lut=lut: lut.get(v, np.nan))
        np.testing.assert_array_equal(col.to_numpy(float), training[name].to_numpy(), ref)


@pytest.mark.integration
def test_cli_generate_apply_materialize_pricing(
    tmp_path: Path, redis_url: str, unique_name: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from stream.cli import main

    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path / "home"))
    assert main(["features", "generate", "--pipeline", "pricing", "--skus", "300",
                 "--stores", "10", "--rows", "2000", "--no-progress"]) == 0  # fmt: skip
    data = tmp_path / "home" / "data" / "pricing"
    assert (data / "training.parquet").is_file() and (data / "events.parquet").is_file()
    repo = prepare_repo("pricing", tmp_path / "repo", project=unique_name)
    try:
        args = ["features", "materialize", "--repo", str(repo), "--redis-url", redis_url,
                "--apply", "--no-progress", "--days", "3"]  # fmt: skip
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "rows/s" in out and "peak RSS" in out and unique_name in out
        comp = pd.read_parquet(data / "competitor_prices.parquet")
        skus = pd.read_parquet(data / "sku_demand.parquet")["sku_id"].tolist()
        missing = sorted(set(skus) - set(comp["sku_id"]))[:3]  # SKUs without competitor data
        ids = [int(s) for s in skus[:20]] + [int(s) for s in missing]
        got = open_store(repo, redis_url).get_online_features(
            features=["competitor_prices:comp_price_min", "competitor_prices:comp_updated_at",
                      "sku_demand:on_promotion", "sku_demand:sku_category"],
            entity_rows=[{"sku_id": s} for s in ids],
        ).to_dict()  # fmt: skip
        _same(got["comp_price_min"], _expected(comp, "sku_id", ids, "comp_price_min"), "min")
        _same(got["comp_updated_at"], _expected(comp, "sku_id", ids, "comp_updated_at"), "ts")
        assert missing and all(got["comp_price_min"][-len(missing) :][i] is None
                               for i in range(len(missing)))  # fmt: skip
        assert set(got["on_promotion"]) <= {True, False}
        # a bad window is one clear error, not a traceback
        assert main(["features", "materialize", "--repo", str(repo), "--redis-url", redis_url,
                     "--start", "2030-01-01", "--end", "2029-01-01"]) != 0  # fmt: skip
        assert "empty materialization window" in capsys.readouterr().err
    finally:
        delete_project_keys(redis_url, unique_name)


def test_materialize_needs_data(tmp_path: Path) -> None:
    repo = prepare_repo("fraud", tmp_path, data_dir=tmp_path / "nothing-here")
    with pytest.raises(FeatureDataError, match="features generate"):
        materialize_repo(repo, progress=False)
