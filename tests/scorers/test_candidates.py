"""``CompiledModel.predict_sweep``: candidate sweeps give LightGBM's scores, bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from scorers import CompiledModel
from scorers.candidates import expand
from tests.scorers.conftest import CAT, N_FEATURES, nasty_rows

CASES = {
    "binary": ({"objective": "binary"}, "binary", 20),
    "multiclass": ({"objective": "multiclass", "num_class": 3}, "multiclass", 8),
    "zero_as_missing": ({"objective": "regression", "zero_as_missing": True}, "regression", 12),
    "deep_walked": ({"objective": "regression", "num_leaves": 100, "min_data_in_leaf": 1},
                    "regression", 6),
    "linear_walked": ({"objective": "regression", "linear_tree": True}, "regression", 6),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n", [2, 37])  # one by one, and blocks of 16 events plus a rest
@pytest.mark.parametrize("cols", [[0], [1, CAT], [CAT], list(range(N_FEATURES))],
                         ids=["one", "numeric+categorical", "categorical", "all"])
def test_sweep_equals_lightgbm_on_the_expanded_rows(
        case: str, n: int, cols: list[int],
        get_model: Callable[..., tuple[lgb.Booster, CompiledModel]]) -> None:
    params, kind, rounds = CASES[case]
    booster, model = get_model(f"sweep-{case}", params, kind, rounds)
    c = 5
    X = nasty_rows(n, seed=3)
    values = nasty_rows(n * c, seed=4)[:, cols].reshape(n, c, len(cols))
    rows = expand(X, np.array(cols), values)
    want = booster.predict(rows)
    for raw in (False, True):
        got = model.predict_sweep(X, cols, values, raw_score=raw)
        assert got.shape == (n, c, *want.shape[1:])
        np.testing.assert_array_equal(got.reshape(want.shape),
                                      booster.predict(rows, raw_score=raw))
        np.testing.assert_array_equal(got.reshape(want.shape),
                                      model.predict(rows, raw_score=raw))


def test_shared_candidates_names_and_one_event(
        get_model: Callable[..., tuple[lgb.Booster, CompiledModel]]) -> None:
    booster, model = get_model("sweep-binary", *CASES["binary"])
    X = nasty_rows(1, seed=5)
    # Same candidates on every event; more than 16 of them (two candidate blocks).
    prices = np.array([[-1.0], [0.0], [0.5], [1.5], [np.nan]] * 4)
    got = model.predict_sweep(X, [model.feature_names[2]], prices)
    np.testing.assert_array_equal(got[0], booster.predict(expand(X, np.array([2]),
                                                                 prices[None])))
    assert model.predict_sweep(np.zeros((0, N_FEATURES)), [2], prices).shape == (0, 20)


@pytest.mark.parametrize("bad", [
    ([], np.zeros((1, 0))), ([0, 0], np.zeros((2, 2))), ([N_FEATURES], np.zeros((2, 1))),
    (["no_such_feature"], np.zeros((2, 1))), ([0], np.zeros((3, 2, 2))), ([0], np.zeros(3)),
])
def test_bad_sweeps_raise_one_clear_error(
        bad: tuple[Any, Any],
        get_model: Callable[..., tuple[lgb.Booster, CompiledModel]]) -> None:
    _, model = get_model("sweep-binary", *CASES["binary"])
    with pytest.raises(ValueError, match="cand_"):
        model.predict_sweep(nasty_rows(3), *bad)
