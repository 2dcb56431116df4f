"""Session fixtures for scorer tests: tiny LightGBM models trained once, compiled once."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from scorers import CompiledModel, compile_lightgbm

N_FEATURES = 6
CAT = 3  # categorical column index in the synthetic data


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows with NaN, exact zeros, a categorical column with up to 70 categories."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, CAT] = rng.integers(0, 70, n)
    X[rng.random((n, N_FEATURES)) < 0.08] = np.nan
    X[rng.random((n, N_FEATURES)) < 0.08] = 0.0
    y = (np.nan_to_num(X[:, 0]) + (np.nan_to_num(X[:, CAT]) % 3 == 0) - 0.5 * np.nan_to_num(X[:, 1])
         + 0.3 * rng.normal(size=n))
    return X, y


def nasty_rows(n: int, seed: int = 1) -> np.ndarray:
    """Test rows: NaN, ±inf, zeros, ±1e-36, unseen/negative/fractional categories."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)) * 1.5
    X[:, CAT] = rng.integers(-3, 90, n) + rng.choice([0.0, 0.0, 0.5, -0.5, 0.999], n)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-36, -1e-36,
                        1.0000000180025095e-35, -1.0000000180025095e-35, 2.0**31, 1e300])
    pick = rng.random((n, N_FEATURES)) < 0.2
    X[pick] = rng.choice(special, pick.sum())
    return X


def labels(kind: str, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if kind == "binary":
        return (y > 0.5).astype(float)
    if kind == "multiclass":
        return np.digitize(y, [0.0, 1.0]).astype(float)
    if kind == "prob":
        return 1.0 / (1.0 + np.exp(-y))
    if kind == "positive":
        return np.exp(y / 2) + 0.01
    if kind == "rank":
        return np.clip(np.digitize(y, [-0.5, 0.5, 1.5]), 0, 3).astype(float)
    return y


def train(params: dict[str, Any], kind: str = "regression", rounds: int = 8, n: int = 400,
          seed: int = 0) -> lgb.Booster:
    X, y = make_data(n, seed)
    rng = np.random.default_rng(seed + 7)
    lab = labels(kind, y, rng)
    ds_kwargs: dict[str, Any] = {"categorical_feature": [CAT]}
    if kind == "rank":
        ds_kwargs["group"] = [20] * (n // 20)
    full = {"verbose": -1, "num_leaves": 15, "min_data_in_leaf": 5, "min_data_per_group": 5,
            "cat_smooth": 1.0, "max_cat_to_onehot": 4, "seed": seed, **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lgb.train(full, lgb.Dataset(X, lab, **ds_kwargs), rounds)


@pytest.fixture(scope="session")
def model_cache() -> dict[str, tuple[lgb.Booster, CompiledModel]]:
    return {}


@pytest.fixture(scope="session")
def get_model(model_cache: dict[str, tuple[lgb.Booster, CompiledModel]]
              ) -> Callable[..., tuple[lgb.Booster, CompiledModel]]:
    """``get_model(key, params, kind, rounds)``: a trained Booster and its compiled twin."""

    def get(key: str, params: dict[str, Any], kind: str = "regression",
            rounds: int = 8) -> tuple[lgb.Booster, CompiledModel]:
        if key not in model_cache:
            booster = train(params, kind, rounds)
            model_cache[key] = (booster, compile_lightgbm(booster))
        return model_cache[key]

    return get


@pytest.fixture(scope="session", autouse=True)
def _tables_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Keep compiled-table caches of the test session out of the working tree."""
    from scorers import compiled

    where = tmp_path_factory.mktemp("scorer-cache")
    patch = pytest.MonkeyPatch()
    patch.setattr(compiled, "default_cache_dir", lambda: where)
    yield where
    patch.undo()
