"""Oracle tests of the block-walking kernel: deep, categorical-heavy, NaN-heavy, multiclass
and linear trees against ``lightgbm.Booster.predict``, at every batch-size path."""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from scorers import CompiledModel, compile_lightgbm

ATOL = 1e-12
NF = 12
NCAT = 4  # the first NCAT columns are categorical


def rows(n: int, seed: int, nan: float = 0.1) -> np.ndarray:
    """Rows with NaN, zeros, ±1e-36, ±inf, and unseen, negative, fractional categories."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, NF))
    X[:, :NCAT] = rng.integers(-2, 120, (n, NCAT)) + rng.choice([0.0, 0.0, 0.5, -0.5], (n, NCAT))
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-36, -1e-36, 2.0**31])
    pick = rng.random(X.shape) < 0.08
    X[pick] = rng.choice(special, pick.sum())
    X[rng.random(X.shape) < nan] = np.nan
    return X


# key: (params, label kind, rows, rounds, training NaN share)
CASES: dict[str, tuple[dict[str, Any], str, int, int, float]] = {
    "leaves127": ({"num_leaves": 127}, "binary", 3000, 3, 0.05),
    "leaves255": ({"num_leaves": 255}, "regression", 4000, 3, 0.05),
    "leaves1023": ({"num_leaves": 1023}, "regression", 6000, 2, 0.05),
    "categorical_heavy": ({"num_leaves": 255, "max_cat_threshold": 64, "cat_l2": 0.1,
                           "cat_smooth": 1.0}, "binary", 4000, 3, 0.05),
    "nan_heavy": ({"num_leaves": 200}, "binary", 4000, 3, 0.6),
    "multiclass": ({"num_leaves": 100, "objective": "multiclass", "num_class": 3},
                   "multiclass", 3000, 2, 0.1),
    "zero_as_missing": ({"num_leaves": 150, "zero_as_missing": True}, "regression", 3000, 3,
                        0.1),
    "linear_deep": ({"num_leaves": 100, "linear_tree": True}, "regression", 3000, 2, 0.1),
    "linear_small": ({"num_leaves": 15, "linear_tree": True, "objective": "binary"}, "binary",
                     1500, 3, 0.1),
}


def train(key: str) -> lgb.Booster:
    params, kind, n, rounds, nan = CASES[key]
    X = rows(n, seed=len(key), nan=nan)
    X[:, :NCAT] = np.abs(np.nan_to_num(np.floor(X[:, :NCAT]), posinf=3, neginf=3)) % 100
    X[~np.isfinite(X)] = np.nan
    rng = np.random.default_rng(7)
    z = (np.nan_to_num(X[:, NCAT]) + (X[:, 0] % 3 == 0) - np.nan_to_num(X[:, NCAT + 1])
         + 0.5 * np.sin(np.nan_to_num(X[:, -1]) * 3) + 0.3 * rng.normal(size=n))
    y = {"binary": (z > 0.3).astype(float), "multiclass": np.digitize(z, [-0.5, 0.8]) * 1.0,
         "regression": z}[kind]
    full = {"objective": "binary" if kind == "binary" else "regression", "verbose": -1,
            "min_data_in_leaf": 1, "min_data_per_group": 1, "min_sum_hessian_in_leaf": 0,
            "max_cat_to_onehot": 4, "num_threads": 1, "seed": 3, **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lgb.train(full, lgb.Dataset(X, y, categorical_feature=list(range(NCAT))),
                         rounds)


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[lgb.Booster, CompiledModel]]:
    return {}


def get(models: dict[str, tuple[lgb.Booster, CompiledModel]], key: str
        ) -> tuple[lgb.Booster, CompiledModel]:
    if key not in models:
        booster = train(key)
        models[key] = (booster, compile_lightgbm(booster, cache_dir=False))
    return models[key]


@pytest.mark.parametrize("key", sorted(CASES))
def test_deep_models_match_lightgbm_at_every_batch_path(models: Any, key: str) -> None:
    booster, model = get(models, key)
    assert model.kernel == "blockwalk"
    X = rows(1100, seed=11)  # more than two blocks of rows
    for raw in (False, True):
        np.testing.assert_allclose(model.predict(X, raw_score=raw),
                                   booster.predict(X, raw_score=raw), rtol=0, atol=ATOL)
    expected = booster.predict(X)
    # n < 4 walks groups of trees for one row; larger batches walk blocks of rows.
    for n in (1, 2, 3, 4, 5, 63, 64, 65, 129, 511, 512, 513):
        np.testing.assert_allclose(model.predict(X[:n]), expected[:n], rtol=0, atol=ATOL,
                                   err_msg=f"batch {n}")
    np.testing.assert_allclose(model.predict_general(X), expected, rtol=0, atol=ATOL)


def test_models_are_as_deep_as_asked(models: Any) -> None:
    for key, least in (("leaves127", 100), ("leaves255", 200), ("leaves1023", 700)):
        _, model = get(models, key)
        assert max(t.num_leaves for t in model.ir.trees) >= least, key
    _, model = get(models, "categorical_heavy")
    assert sum(int((t.decision_type & 1).sum()) for t in model.ir.trees) > 50


def test_values_exactly_on_deep_thresholds(models: Any) -> None:
    booster, model = get(models, "leaves255")
    tree = model.ir.trees[0]
    base = rows(1, seed=5)[0]
    X = []
    for f, thr, dt in zip(tree.split_feature, tree.threshold, tree.decision_type, strict=True):
        if dt & 1:
            continue
        for value in (thr, np.nextafter(thr, np.inf), np.nextafter(thr, -np.inf)):
            row = base.copy()
            row[f] = value
            X.append(row)
    X = np.array(X)
    np.testing.assert_allclose(model.predict(X), booster.predict(X), rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.predict(X[:3]), booster.predict(X[:3]), rtol=0, atol=ATOL)
