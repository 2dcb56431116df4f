"""Training from parquet: specs, encoding, splits, metrics, determinism, registration."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from scorers.refstats import numeric_stats, score_stats, validate_reference
from scorers.registry import Registry
from scorers.train import (
    TrainingSpec,
    TrainOptions,
    default_data_path,
    describe_model,
    evaluate,
    load_spec,
    load_training_data,
    roc_auc,
    train,
    train_and_register,
)

FAST = {"num_trees": 25, "progress": False, "threads": 1}


def _fraud_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 1.0, n)
    amount[rng.random(n) < 0.05] = np.nan
    country = rng.choice(np.array(["US", "DE", "FR", "KP"], dtype=object), n)
    country[rng.random(n) < 0.03] = None
    logit = -3.0 + 0.015 * np.nan_to_num(amount) + 2.5 * (country == "KP")
    return pd.DataFrame({
        "event_timestamp": pd.date_range("2026-01-01", periods=n, freq="min", tz="UTC"),
        "amount": amount,
        "hour": rng.integers(0, 24, n),
        "home_country": country,
        "is_online": rng.random(n) < 0.3,
        "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64),
    })


def _write(tmp_path: Path, df: pd.DataFrame, sidecar: dict | None) -> Path:
    path = tmp_path / "training.parquet"
    df.to_parquet(path)
    if sidecar is not None:
        (tmp_path / "training.json").write_text(json.dumps(sidecar))
    return path


SIDECAR = {
    "label": "label",
    "features": ["amount", "hour", "home_country", "is_online"],
    "categorical": ["home_country"],
    "objective": "binary",
}


def test_roc_auc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(pairs / (pos.size * neg.size), abs=1e-12)
    assert np.isnan(roc_auc(np.zeros(5), np.arange(5.0)))


def test_evaluate_metrics() -> None:
    y = np.array([0.0, 1.0, 1.0, 0.0])
    p = np.array([0.1, 0.8, 0.6, 0.3])
    m = evaluate("binary", y, p)
    assert m["auc"] == 1.0 and m["label_rate"] == 0.5
    assert m["logloss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.6, 0.7])))
    r = evaluate("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert r["rmse"] == pytest.approx(np.sqrt(4 / 3)) and r["mae"] == pytest.approx(2 / 3)
    mc = evaluate("multiclass", np.array([0.0, 2.0]), np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4]]))
    assert mc["accuracy"] == 0.5 and mc["logloss"] == pytest.approx(-np.mean(np.log([0.7, 0.4])))


def test_spec_from_sidecar_flags_and_inference(tmp_path: Path) -> None:
    path = _write(tmp_path, _fraud_frame(50), dict(SIDECAR, timestamp="event_timestamp"))
    spec = load_spec(path)
    assert spec.features == ("amount", "hour", "home_country", "is_online")
    assert spec.timestamp == "event_timestamp" and spec.objective == "binary"
    over = load_spec(path, features=["hour", "amount"], categorical=[], objective="regression")
    assert over.features == ("hour", "amount") and over.objective == "regression"
    (tmp_path / "training.json").unlink()
    cols = {"amount": "float64", "hour": "int64", "home_country": "string", "label": "int64",
            "is_online": "bool", "event_timestamp": "timestamp[us, tz=UTC]"}
    inferred = load_spec(path, label="label", columns=cols)
    assert inferred.features == ("amount", "hour", "is_online")  # numeric/bool, not the label
    with_cat = load_spec(path, label="label", categorical=["home_country"], columns=cols)
    assert "home_country" in with_cat.features
    with pytest.raises(Exception, match="no label column"):
        load_spec(path, columns=cols)
    with pytest.raises(Exception, match="not among the features"):
        load_spec(path, label="label", features=["amount"], categorical=["hour"])
    with pytest.raises(Exception, match="cannot also be a feature"):
        load_spec(path, label="amount", features=["amount", "hour"])


def test_strings_are_encoded_with_the_vocabulary(tmp_path: Path) -> None:
    df = pd.DataFrame({"c": ["DE", "US", None, "XX", "US"], "y": [0, 1, 0, 1, 1]})
    path = _write(tmp_path, df, None)
    spec = TrainingSpec(label="y", features=("c",), categorical=("c",))
    X, y, used, _ = load_training_data(path, spec, {"c": ["US", "GB", "DE"]})
    np.testing.assert_array_equal(X[:, 0], [2.0, 0.0, np.nan, np.nan, 0.0])
    assert used == {"c": ["US", "GB", "DE"]} and y.tolist() == [0, 1, 0, 1, 1]
    X2, _, used2, _ = load_training_data(path, spec)  # no vocabulary: built from the data
    assert used2 == {"c": ["DE", "US", "XX"]}
    np.testing.assert_array_equal(X2[:, 0], [0.0, 1.0, np.nan, 2.0, 1.0])
    with pytest.raises(Exception, match="must be listed as categorical"):
        load_training_data(path, TrainingSpec(label="y", features=("c",)))
    with pytest.raises(Exception, match="no column"):
        load_training_data(path, TrainingSpec(label="y", features=("zz",)))


def test_train_binary_registers_everything(tmp_path: Path) -> None:
    path = _write(tmp_path, _fraud_frame(), SIDECAR)
    reg = Registry(tmp_path / "models")
    mv = train_and_register(
        data=path, name="fraud", registry=reg, options=TrainOptions(**FAST),
        promote=["champion"],
    )
    md = mv.metadata
    assert reg.resolve("fraud@champion").version == mv.version == 1
    assert md["feature_names"] == list(SIDECAR["features"])
    assert md["categorical_features"] == ["home_country"]
    assert md["objective"] == "binary" and 1 <= md["num_trees"] <= 25
    assert md["metrics"]["auc"] > 0.65 and md["metrics"]["best_iteration"] == md["num_trees"]
    t = md["training"]
    assert t["rows"] == 3000 and t["train_rows"] + t["valid_rows"] == 3000
    assert t["valid_rows"] == pytest.approx(600, abs=2)
    assert t["source_sha256"] and 0.0 < t["label_rate"] < 0.5
    assert md["vocab"] == {"home_country": ["DE", "FR", "KP", "US"]}
    assert md["params"]["seed"] == 42 and md["lightgbm_version"] == lgb.__version__
    ref = md["reference"]
    validate_reference(ref, md["feature_names"])
    assert ref["n"] == t["rows"]  # feature histograms: train + holdout rows
    assert ref["features"]["home_country"]["kind"] == "categorical"
    for entry in ref["features"].values():
        total = sum(entry["counts"]) + entry["missing"] + entry.get("other", 0)
        assert total == ref["n"]
    # The score histogram is the registered model's scores on the holdout rows.
    booster = lgb.Booster(model_str=reg.load_text("fraud"))
    assert booster.num_trees() == md["num_trees"]
    assert sum(ref["score"]["counts"]) == t["valid_rows"]


def test_reference_features_use_every_row_and_the_score_the_holdout(tmp_path: Path) -> None:
    df = _fraud_frame(2000, seed=3)
    path = _write(tmp_path, df, dict(SIDECAR, timestamp="event_timestamp"))
    result = train(path, load_spec(path), TrainOptions(**FAST))
    # Feature histograms: train + holdout rows (a reference large against the drift
    # window). Score: a time split holds out the last 20% by timestamp, scored there.
    tail = df.sort_values("event_timestamp").iloc[-400:]
    ref = result.metadata["reference"]
    assert result.metadata["training"]["split"] == "time"
    assert ref["features"]["amount"] == numeric_stats(df["amount"].to_numpy(), 10)
    assert ref["features"]["is_online"] == numeric_stats(df["is_online"].to_numpy(float), 10)
    booster = lgb.Booster(model_str=result.model_text)
    X = np.column_stack([
        tail["amount"], tail["hour"],
        tail["home_country"].map({"DE": 0, "FR": 1, "KP": 2, "US": 3}).astype(float),
        tail["is_online"].astype(float),
    ])
    assert ref["score"] == score_stats(booster.predict(X), 20)


def test_training_is_deterministic(tmp_path: Path) -> None:
    path = _write(tmp_path, _fraud_frame(1500, seed=5), SIDECAR)
    a = train(path, load_spec(path), TrainOptions(**FAST))
    b = train(path, load_spec(path), TrainOptions(**FAST))
    assert a.model_text == b.model_text
    c = train(path, load_spec(path), TrainOptions(**dict(FAST, seed=7)))
    assert c.model_text != a.model_text


def test_regression_with_flags_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    n = 2000
    df = pd.DataFrame({"base": rng.uniform(10, 100, n), "demand": rng.normal(0, 1, n),
                       "sku": rng.integers(0, 6, n), "note": "x"})
    df["price"] = df["base"] * (1 + 0.1 * df["demand"]) + rng.normal(0, 1, n)
    path = tmp_path / "prices.parquet"
    df.to_parquet(path)
    reg = Registry(tmp_path / "models")
    mv = train_and_register(
        data=path, registry=reg, label="price", categorical=["sku"],
        features=["base", "demand", "sku"], options=TrainOptions(**dict(FAST, num_trees=60)),
    )
    md = mv.metadata
    assert mv.name == "prices" and md["objective"] == "regression"
    assert md["metrics"]["rmse"] < 0.5 * df["price"].std()
    assert md["training"]["label_mean"] == pytest.approx(df["price"].mean())
    assert md["reference"]["features"]["sku"]["kind"] == "categorical"
    # Without --features: numeric columns except the label (the string column is left out).
    mv2 = train_and_register(data=path, registry=reg, label="price",
                             options=TrainOptions(**FAST))
    assert mv2.feature_names == ["base", "demand", "sku"] and mv2.version == 2


def test_pipeline_default_path_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path / "home"))
    assert default_data_path("fraud") == tmp_path / "home/data/fraud/training.parquet"
    with pytest.raises(Exception, match="features generate --pipeline fraud"):
        train_and_register(pipeline="fraud", options=TrainOptions(**FAST))
    target = default_data_path("fraud")
    target.parent.mkdir(parents=True)
    _write(target.parent, _fraud_frame(1000), SIDECAR)
    mv = train_and_register(pipeline="fraud", options=TrainOptions(**FAST))
    assert mv.name == "fraud" and mv.path.is_relative_to(tmp_path / "home" / "models")
    assert mv.metadata["params"]["num_leaves"] == 63  # the fraud demo default
    with pytest.raises(Exception, match="does not exist"):
        train_and_register(data=tmp_path / "none.parquet")
    bad = tmp_path / "bad"
    bad.mkdir()
    df = _fraud_frame(100)
    df["label"] = df["label"] * 3
    p = _write(bad, df, SIDECAR)
    with pytest.raises(Exception, match="0/1 label"):
        train(p, load_spec(p), TrainOptions(**FAST))
    with pytest.raises(Exception, match="valid fraction"):
        train(p, load_spec(p, objective="regression"),
              TrainOptions(**dict(FAST, valid_fraction=1.5)))


def test_registered_model_compiles_when_the_compiler_exists(tmp_path: Path) -> None:
    scorers = pytest.importorskip("scorers")
    compile_lightgbm = getattr(scorers, "compile_lightgbm", None)
    if compile_lightgbm is None:
        pytest.skip("scorers.compile_lightgbm not available yet")
    path = _write(tmp_path, _fraud_frame(1000), SIDECAR)
    reg = Registry(tmp_path / "models")
    mv = train_and_register(data=path, registry=reg, options=TrainOptions(**FAST))
    compiled = compile_lightgbm(reg.load_text(mv.ref))
    assert compiled.sha256 == mv.sha256
    assert list(compiled.feature_names) == mv.feature_names
    X, _, _, _ = load_training_data(path, load_spec(path), mv.metadata["vocab"])
    booster = lgb.Booster(model_str=reg.load_text(mv.ref))
    np.testing.assert_allclose(compiled.predict(X[:200]), booster.predict(X[:200]), atol=1e-12)


def test_describe_model_trained_elsewhere(tmp_path: Path) -> None:
    df = _fraud_frame(1200, seed=11)
    path = _write(tmp_path, df, None)
    X = df[["amount", "hour"]].to_numpy(float)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1},
                        lgb.Dataset(X, df["label"], feature_name=["amount", "hour"]),
                        num_boost_round=5)
    text = booster.model_to_string()
    meta = describe_model(text, path, label="label")
    ref = meta["reference"]
    assert ref["n"] == 1200 and list(ref["features"]) == ["amount", "hour"]
    assert ref["features"]["amount"] == numeric_stats(df["amount"].to_numpy(), 10)
    assert ref["score"] == score_stats(booster.predict(X), 20)
    assert meta["metrics"]["auc"] == pytest.approx(roc_auc(df["label"], booster.predict(X)))
    unlabelled = describe_model(text, path)
    assert "metrics" not in unlabelled and unlabelled["reference"] == ref
    reg = Registry(tmp_path / "models")
    mv = reg.register(text, "ext", unlabelled)
    assert mv.reference == ref
    (tmp_path / "x").mkdir()
    hour_only = _write(tmp_path / "x", df[["hour", "label"]], None)
    with pytest.raises(Exception, match="no column"):
        describe_model(text, hour_only)


def test_multiclass_and_poisson_objectives(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    n = 1500
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["cls"] = np.digitize(df["a"] + 0.3 * rng.normal(size=n), [-0.5, 0.5])
    df["units"] = rng.poisson(np.exp(0.5 + 0.4 * df["b"]))
    path = tmp_path / "multi.parquet"
    df.to_parquet(path)
    spec = load_spec(path, label="cls", features=["a", "b"], objective="multiclass")
    result = train(path, spec, TrainOptions(**FAST))
    md = result.metadata
    assert md["params"]["num_class"] == 3 and md["metrics"]["accuracy"] > 0.6
    booster = lgb.Booster(model_str=result.model_text)
    assert booster.num_model_per_iteration() == 3
    assert sum(md["reference"]["score"]["counts"]) == md["training"]["valid_rows"]
    spec = load_spec(path, label="units", features=["a", "b"], objective="poisson")
    pois = train(path, spec, TrainOptions(**FAST)).metadata
    assert pois["params"]["objective"] == "poisson" and pois["metrics"]["rmse"] > 0
    assert "label_mean" in pois["training"]
