"""TreeSHAP contributions and reason codes vs LightGBM; pandas input handling."""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from scorers import ModelFormatError, compile_lightgbm
from tests.scorers.conftest import nasty_rows
from tests.scorers.test_oracle import BOOSTING, OBJECTIVES

CONTRIB_CASES = [OBJECTIVES[0], OBJECTIVES[2], OBJECTIVES[3], BOOSTING[0], BOOSTING[2],
                 BOOSTING[4], BOOSTING[5], BOOSTING[6], BOOSTING[9]]


@pytest.mark.parametrize(("key", "params", "kind", "rounds"), CONTRIB_CASES,
                         ids=[c[0] for c in CONTRIB_CASES])
def test_contributions_match_pred_contrib(get_model: Any, key: str, params: dict[str, Any],
                                          kind: str, rounds: int) -> None:
    booster, model = get_model(key, params, kind, rounds)
    X = nasty_rows(150, seed=11)
    expected = booster.predict(X, pred_contrib=True)
    got = model.contributions(X)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    # Contributions add up to the raw score, class by class.
    per_class = got.reshape(X.shape[0], model.ir.num_tree_per_iteration, -1).sum(axis=2)
    raw = model.predict(X, raw_score=True).reshape(X.shape[0], -1)
    if not model.ir.average_output:
        np.testing.assert_allclose(per_class, raw, rtol=0, atol=1e-9)


def test_linear_tree_contributions_are_refused_like_lightgbm(get_model: Any) -> None:
    _, model = get_model(*BOOSTING[7])
    with pytest.raises(ModelFormatError, match="linear"):
        model.contributions(nasty_rows(2))


def test_reasons_are_the_top_positive_contributions(get_model: Any) -> None:
    booster, model = get_model(*OBJECTIVES[0])
    X = nasty_rows(40, seed=3)
    reasons = model.reasons(X, k=2)
    contrib = booster.predict(X, pred_contrib=True)[:, :-1]
    for r in range(X.shape[0]):
        positive = sorted((c for c in contrib[r] if c > 0), reverse=True)[:2]
        got = [c for c in reasons.contribution[r] if c > 0]
        np.testing.assert_allclose(got, positive, rtol=0, atol=1e-9)
        for i, c in zip(reasons.index[r], reasons.contribution[r], strict=True):
            if i >= 0:
                assert abs(contrib[r, i] - c) < 1e-9
                assert reasons.value[r, list(reasons.index[r]).index(i)] is not None
    rows = reasons.rows()
    assert len(rows) == 40 and all(len(row) <= 2 for row in rows)
    assert all(name.startswith("Column_") for row in reasons.names() for name in row)
    first = next(row for row in rows if row)
    _name, value, contribution = first[0]
    assert contribution > 0 and isinstance(value, float)


def test_reasons_for_multiclass_explain_the_predicted_class(get_model: Any) -> None:
    booster, model = get_model(*OBJECTIVES[2])
    X = nasty_rows(10, seed=4)
    reasons = model.reasons(X, k=1)
    contrib = booster.predict(X, pred_contrib=True).reshape(10, 3, 7)
    cls = np.argmax(booster.predict(X, raw_score=True), axis=1)
    for r in range(10):
        best = contrib[r, cls[r], :6].max()
        if best > 0:
            assert abs(reasons.contribution[r, 0] - best) < 1e-9
    with pytest.raises(ValueError, match="class_index"):
        model.reasons(X, class_index=5)


@pytest.fixture(scope="module")
def pandas_model() -> tuple[lgb.Booster, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({
        "amount": rng.gamma(2, 50, n),
        "channel": pd.Categorical(rng.choice(["web", "pos", "app", "atm"], n)),
        "age": rng.integers(18, 90, n).astype(float),
        "country": pd.Categorical(rng.choice(list("ABCDEFGHIJ"), n)),
    })
    y = ((df["amount"] > 100) ^ (df["channel"] == "atm") | (df["country"] == "C")).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_per_group": 5,
                             "num_leaves": 8}, lgb.Dataset(df, y), 10)
    return booster, df


def test_pandas_categories_and_column_order(pandas_model: tuple[lgb.Booster, pd.DataFrame],
                                            tmp_path: Any) -> None:
    booster, df = pandas_model
    path = tmp_path / "m.txt"
    booster.save_model(str(path))
    model = compile_lightgbm(path)
    assert model.pandas_categorical is not None
    test = df.head(50).copy()
    # Categories in another order and an unseen one: mapped through the training lists.
    test["channel"] = pd.Categorical(test["channel"].astype(str).where(
        np.arange(50) % 7 != 0, "crypto"), categories=["crypto", "atm", "app", "pos", "web"])
    test.loc[test.index[:3], "amount"] = np.nan
    reordered = test[["country", "age", "channel", "amount"]]
    expected = booster.predict(test)
    np.testing.assert_allclose(model.predict(reordered), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.contributions(reordered),
                               booster.predict(test, pred_contrib=True), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="lacks"):
        model.predict(test.drop(columns=["age"]))
    bad = test.assign(age=test["age"].astype(str))
    with pytest.raises(ValueError, match="non-numeric"):
        model.predict(bad)


@pytest.mark.parametrize(("key", "params", "kind", "rounds"), CONTRIB_CASES,
                         ids=[c[0] for c in CONTRIB_CASES])
def test_saabas_contributions_sum_to_the_raw_score(get_model: Any, key: str,
                                                   params: dict[str, Any], kind: str,
                                                   rounds: int) -> None:
    booster, model = get_model(key, params, kind, rounds)
    X = nasty_rows(150, seed=12)
    got = model.contributions(X, method="saabas")
    shap = booster.predict(X, pred_contrib=True)
    assert got.shape == shap.shape
    k = model.ir.num_tree_per_iteration
    blocks, shap_blocks = got.reshape(X.shape[0], k, -1), shap.reshape(X.shape[0], k, -1)
    # The same bias column as TreeSHAP (each tree's expected value) ...
    np.testing.assert_allclose(blocks[:, :, -1], shap_blocks[:, :, -1], rtol=0, atol=1e-12)
    # ... and, like SHAP values, the contributions add up to the raw score.
    if not model.ir.average_output:
        raw = booster.predict(X, raw_score=True).reshape(X.shape[0], -1)
        np.testing.assert_allclose(blocks.sum(axis=2), raw, rtol=0, atol=1e-9)
    # A feature no tree splits on gets nothing.
    used = {int(f) for t in model.ir.trees for f in t.split_feature[:t.num_internal]}
    for f in set(range(model.num_features)) - used:
        assert not blocks[:, :, f].any()


def test_saabas_is_path_attribution_on_a_stump() -> None:
    """One split: the split feature gets leaf value minus the tree's expected value."""
    X = np.array([[0.0], [1.0]] * 50)
    y = np.array([0.0, 10.0] * 50)
    booster = lgb.train({"verbose": -1, "num_leaves": 2, "min_data_in_leaf": 1,
                         "learning_rate": 1.0}, lgb.Dataset(X, y), 1)
    model = compile_lightgbm(booster)
    got = model.contributions(np.array([[0.0], [1.0]]), method="saabas")
    raw = booster.predict(np.array([[0.0], [1.0]]), raw_score=True)
    bias = float(got[0, 1])
    np.testing.assert_allclose(got[:, 0], raw - bias, rtol=0, atol=1e-12)
    assert got[0, 0] < 0 < got[1, 0]


def test_reasons_with_saabas(get_model: Any) -> None:
    _, model = get_model(*OBJECTIVES[0])
    X = nasty_rows(40, seed=5)
    reasons = model.reasons(X, k=2, method="saabas")
    contrib = model.contributions(X, method="saabas")[:, :-1]
    for r in range(X.shape[0]):
        positive = sorted((c for c in contrib[r] if c > 0), reverse=True)[:2]
        got = [c for c in reasons.contribution[r] if c > 0]
        np.testing.assert_allclose(got, positive, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        model.reasons(X, method="lime")
    _, linear = get_model(*BOOSTING[7])
    with pytest.raises(ModelFormatError, match="linear"):
        linear.contributions(nasty_rows(2), method="saabas")
