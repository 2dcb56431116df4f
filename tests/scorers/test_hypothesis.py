"""Hypothesis draws rows (NaN, ±inf, exact thresholds, unseen categories) against LightGBM."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.scorers.conftest import CAT, N_FEATURES
from tests.scorers.test_oracle import BOOSTING, OBJECTIVES

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-36, -1e-36, 1.0000000180025095e-35,
           -1.0000000180025095e-35, 5e-324]

MODELS = [OBJECTIVES[0], OBJECTIVES[2], BOOSTING[4], BOOSTING[5], BOOSTING[6], BOOSTING[7],
          BOOSTING[9]]


def value(thresholds: list[float]) -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from(SPECIAL),
        st.sampled_from(thresholds),
        st.floats(allow_nan=True, allow_infinity=True, width=64),
        st.floats(-3, 3),
    )


def category() -> st.SearchStrategy[float]:
    return st.one_of(
        st.integers(-5, 200).map(float),
        st.floats(-2, 100),
        st.sampled_from([np.nan, np.inf, -np.inf, 2.0**31, 2.0**31 - 1, -0.9999, 1e18]),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_rows_match_lightgbm(get_model: Any, data: st.DataObject) -> None:
    key, params, kind, rounds = data.draw(st.sampled_from(MODELS))
    booster, model = get_model(key, params, kind, rounds)
    thresholds = sorted({float(t) for tree in model.ir.trees for t in tree.threshold}) or [0.0]
    n = data.draw(st.integers(1, 24))
    rows = []
    for _ in range(n):
        row = [data.draw(category() if j == CAT else value(thresholds))
               for j in range(N_FEATURES)]
        rows.append(row)
    X = np.array(rows, dtype=np.float64)
    for raw in (False, True):
        expected = booster.predict(X, raw_score=raw)
        np.testing.assert_allclose(model.predict(X, raw_score=raw), expected, rtol=0,
                                   atol=1e-12)
    if not any(t.is_linear for t in model.ir.trees):
        np.testing.assert_allclose(model.contributions(X), booster.predict(X, pred_contrib=True),
                                   rtol=0, atol=1e-9)
