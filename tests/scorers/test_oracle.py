"""Oracle tests: the compiled model against ``lightgbm.Booster.predict`` on the same model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.scorers.conftest import nasty_rows

ATOL = 1e-12

# (key, params, label kind, rounds) — every objective's output transform.
OBJECTIVES: list[tuple[str, dict[str, Any], str, int]] = [
    ("binary", {"objective": "binary"}, "binary", 8),
    ("binary_sigmoid", {"objective": "binary", "sigmoid": 0.37}, "binary", 8),
    ("multiclass", {"objective": "multiclass", "num_class": 3}, "multiclass", 6),
    ("multiclassova", {"objective": "multiclassova", "num_class": 3, "sigmoid": 1.7},
     "multiclass", 6),
    ("cross_entropy", {"objective": "cross_entropy"}, "prob", 8),
    ("cross_entropy_lambda", {"objective": "cross_entropy_lambda"}, "prob", 8),
    ("poisson", {"objective": "poisson"}, "positive", 8),
    ("gamma", {"objective": "gamma"}, "positive", 8),
    ("tweedie", {"objective": "tweedie"}, "positive", 8),
    ("regression", {"objective": "regression"}, "regression", 8),
    ("regression_sqrt", {"objective": "regression", "reg_sqrt": True}, "regression", 8),
    ("l1", {"objective": "regression_l1"}, "regression", 8),
    ("huber", {"objective": "huber"}, "regression", 8),
    ("fair", {"objective": "fair"}, "regression", 8),
    ("quantile", {"objective": "quantile", "alpha": 0.8}, "regression", 8),
    ("mape", {"objective": "mape"}, "positive", 8),
    ("lambdarank", {"objective": "lambdarank"}, "rank", 6),
    ("rank_xendcg", {"objective": "rank_xendcg"}, "rank", 6),
]

BOOSTING: list[tuple[str, dict[str, Any], str, int]] = [
    ("dart", {"objective": "binary", "boosting": "dart", "drop_rate": 0.3}, "binary", 10),
    ("goss", {"objective": "regression", "data_sample_strategy": "goss",
              "learning_rate": 0.5}, "regression", 10),
    ("rf", {"objective": "binary", "boosting": "rf", "bagging_freq": 1,
            "bagging_fraction": 0.6, "feature_fraction": 0.7}, "binary", 6),
    ("rf_multi", {"objective": "multiclassova", "num_class": 3, "boosting": "rf",
                  "bagging_freq": 1, "bagging_fraction": 0.6}, "multiclass", 4),
    ("zero_as_missing", {"objective": "regression", "zero_as_missing": True}, "regression", 8),
    ("no_missing", {"objective": "regression", "use_missing": False}, "regression", 8),
    ("many_leaves", {"objective": "regression", "num_leaves": 150, "min_data_in_leaf": 1,
                     "min_data_per_group": 1}, "regression", 4),
    ("linear", {"objective": "regression", "linear_tree": True}, "regression", 6),
    ("linear_binary", {"objective": "binary", "linear_tree": True}, "binary", 6),
    ("many_cats", {"objective": "regression", "max_cat_threshold": 64, "cat_l2": 0.1,
                   "min_data_per_group": 1, "num_leaves": 31}, "regression", 8),
]


def check(booster: Any, model: Any, X: np.ndarray) -> None:
    for raw in (False, True):
        expected = booster.predict(X, raw_score=raw)
        got = model.predict(X, raw_score=raw)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL, err_msg=f"raw={raw}")
    # The reference node walk (also TreeSHAP's decision) must agree too.
    np.testing.assert_allclose(model.predict_general(X), booster.predict(X), rtol=0,
                               atol=ATOL)


@pytest.mark.parametrize(("key", "params", "kind", "rounds"), OBJECTIVES,
                         ids=[o[0] for o in OBJECTIVES])
def test_objectives_match_lightgbm(get_model: Any, key: str, params: dict[str, Any],
                                   kind: str, rounds: int) -> None:
    booster, model = get_model(key, params, kind, rounds)
    check(booster, model, nasty_rows(300))


@pytest.mark.parametrize(("key", "params", "kind", "rounds"), BOOSTING,
                         ids=[o[0] for o in BOOSTING])
def test_boosting_and_tree_kinds_match_lightgbm(get_model: Any, key: str,
                                                params: dict[str, Any], kind: str,
                                                rounds: int) -> None:
    booster, model = get_model(key, params, kind, rounds)
    check(booster, model, nasty_rows(300, seed=5))


def test_kernel_choice(get_model: Any) -> None:
    assert get_model(*OBJECTIVES[0])[1].kernel == "quickscorer"
    assert get_model(*BOOSTING[6])[1].kernel == "blockwalk"
    assert get_model(*BOOSTING[7])[1].kernel == "blockwalk"



@pytest.mark.parametrize(("index", "missing_type"), [(4, 1), (5, 0)])
def test_missing_type_models_really_use_that_type(get_model: Any, index: int,
                                                  missing_type: int) -> None:
    _, model = get_model(*BOOSTING[index])
    kinds = {int(d) >> 2 & 3 for t in model.ir.trees for d in t.decision_type if not d & 1}
    assert missing_type in kinds


def test_multiword_categorical_bitsets_exercised(get_model: Any) -> None:
    booster, model = get_model("many_cats", *BOOSTING[9][1:])
    assert any((np.diff(t.cat_boundaries) > 1).any() for t in model.ir.trees)
    X = nasty_rows(50)
    X[:, 3] = np.arange(-5, 95, 2)  # every category incl. unseen and negative
    check(booster, model, X)


def test_rf_raw_score_is_not_averaged(get_model: Any) -> None:
    booster, model = get_model("rf", *BOOSTING[2][1:])
    X = nasty_rows(20)
    raw = model.predict(X, raw_score=True)
    np.testing.assert_allclose(raw, booster.predict(X, raw_score=True), rtol=0, atol=ATOL)
    assert model.ir.average_output


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 33, 100])
def test_block_and_scalar_paths_agree_for_every_batch_size(get_model: Any, n: int) -> None:
    booster, model = get_model("multiclass", *OBJECTIVES[2][1:])
    X = nasty_rows(n, seed=n)
    np.testing.assert_allclose(model.predict(X), booster.predict(X), rtol=0, atol=ATOL)


@pytest.mark.parametrize("case", [OBJECTIVES[0], OBJECTIVES[2], BOOSTING[9]],
                         ids=["binary", "multiclass", "categorical"])
def test_padded_block_for_leftover_rows_gives_the_same_bits(get_model: Any,
                                                            case: Any) -> None:
    """Leftover rows scored as a padded 16-row block or row by row: identical outputs."""
    from scorers import kernels

    booster, model = get_model(*case)
    saved = model._F[kernels.PAD_MIN]
    assert 1 <= saved <= kernels.BLOCK  # the calibrated threshold
    try:
        for n in (1, 2, 7, 15, 16, 17, 31, 40):
            X = nasty_rows(n, seed=100 + n)
            got = {}
            for pad_min in (1, kernels.BLOCK):
                model._F[kernels.PAD_MIN] = pad_min
                got[pad_min] = model.predict(X, raw_score=True)
            np.testing.assert_array_equal(got[1], got[kernels.BLOCK])
            np.testing.assert_allclose(got[1], booster.predict(X, raw_score=True), rtol=0,
                                       atol=ATOL)
    finally:
        model._F[kernels.PAD_MIN] = saved


def test_values_exactly_on_thresholds(get_model: Any) -> None:
    for key, params, kind, rounds in (OBJECTIVES[0], BOOSTING[4], BOOSTING[5]):
        booster, model = get_model(key, params, kind, rounds)
        rows = []
        for tree in model.ir.trees:
            for f, thr in zip(tree.split_feature, tree.threshold, strict=True):
                for value in (thr, np.nextafter(thr, np.inf), np.nextafter(thr, -np.inf)):
                    row = nasty_rows(1, seed=len(rows))[0]
                    row[f] = value
                    rows.append(row)
        check(booster, model, np.array(rows))


def test_parallel_path_gives_identical_results(get_model: Any) -> None:
    from scorers import compile_lightgbm

    booster, model = get_model("binary", *OBJECTIVES[0][1:])
    par = compile_lightgbm(booster, parallel=True)
    X = nasty_rows(1000, seed=3)
    np.testing.assert_array_equal(par.predict(X), model.predict(X))


def test_input_dtypes_and_layouts(get_model: Any) -> None:
    booster, model = get_model("regression", *OBJECTIVES[9][1:])
    X = nasty_rows(40)
    expected = booster.predict(X)
    np.testing.assert_allclose(model.predict(np.asfortranarray(X)), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(model.predict(X.tolist()), expected, atol=ATOL, rtol=0)
    ints = np.clip(np.nan_to_num(X, nan=0), -9, 99).astype(np.int32)
    np.testing.assert_allclose(model.predict(ints), booster.predict(ints), atol=ATOL, rtol=0)
    assert model.predict(np.zeros((0, 6))).shape == (0,)


def test_per_node_categorical_path_when_tables_exceed_budget(get_model: Any,
                                                             monkeypatch: Any) -> None:
    from scorers import compile_lightgbm, qstables

    booster, tabled = get_model(*BOOSTING[9])
    assert tabled.qs_tables.ct_info.shape[0] > 0  # per-category tables in use by default
    monkeypatch.setattr(qstables, "CAT_TABLE_WORDS", 0)
    # No table cache: the tables built with the default budget must not be reused.
    model = compile_lightgbm(booster, cache_dir=False)
    assert model.qs_tables.ct_info.shape[0] == 0  # every categorical node tested one by one
    check(booster, model, nasty_rows(200, seed=9))
