"""Drift reference statistics equal straightforward numpy computations, in the shared shape."""

from __future__ import annotations

import collections
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scorers.refstats import (
    bin_counts,
    bin_index,
    categorical_stats,
    numeric_edges,
    numeric_stats,
    reference_stats,
    score_stats,
    validate_reference,
)


def _naive_counts(values: np.ndarray, edges: list[float]) -> tuple[list[int], int]:
    """The binning rule written out one value at a time."""
    b = len(edges) - 1
    counts = [0] * b
    missing = 0
    for v in values:
        if np.isnan(v):
            missing += 1
            continue
        i = 0
        for k in range(b):
            if v >= edges[k]:
                i = k
        counts[i] += 1
    return counts, missing


def test_numeric_continuous_edges_are_training_quantiles() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 3.0, 10_000)
    x[rng.random(x.size) < 0.07] = np.nan
    entry = numeric_stats(x, bins=10)
    finite = x[~np.isnan(x)]
    expected = np.quantile(finite, np.linspace(0, 1, 11))
    assert entry["kind"] == "numeric"
    np.testing.assert_allclose(entry["edges"], expected, rtol=0, atol=0)
    assert entry["edges"][0] == finite.min() and entry["edges"][-1] == finite.max()
    assert entry["missing"] == int(np.isnan(x).sum())
    counts, missing = _naive_counts(x, entry["edges"])
    assert entry["counts"] == counts and entry["missing"] == missing
    # Equal-mass bins: each holds about a tenth of the present values.
    assert max(entry["counts"]) - min(entry["counts"]) <= 2


def test_bin_rule_at_and_beyond_the_edges() -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    x = np.array([-np.inf, -5.0, 0.0, 0.999, 1.0, 2.5, 3.0, 7.0, np.inf, np.nan])
    assert bin_index(x, edges).tolist() == [0, 0, 0, 0, 1, 2, 2, 2, 2, -1]
    counts, missing = bin_counts(x, edges)
    assert counts.tolist() == [4, 1, 4] and missing == 1


def test_infinities_do_not_become_edges() -> None:
    x = np.array([np.inf, -np.inf, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    entry = numeric_stats(x, bins=4)
    assert all(np.isfinite(entry["edges"]))
    assert entry["edges"][0] == 1.0 and entry["edges"][-1] == 11.0
    assert sum(entry["counts"]) == x.size and entry["counts"][0] >= 1


def test_discrete_feature_gets_one_bin_per_value() -> None:
    x = np.array([0.0] * 90 + [1.0] * 7 + [2.0] * 3)
    entry = numeric_stats(x, bins=10)
    assert entry["edges"] == [0.0, 0.5, 1.5, 2.0]
    assert entry["counts"] == [90, 7, 3]
    flag = numeric_stats(np.array([0.0, 1.0, 1.0, 0.0, 0.0]))
    assert flag["edges"] == [0.0, 0.5, 1.0] and flag["counts"] == [3, 2]


def test_point_mass_deduplicates_quantile_edges() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([np.zeros(700), rng.exponential(1.0, 300)])
    edges = numeric_edges(x, bins=10)
    assert np.all(np.diff(edges) > 0)
    assert edges[0] == 0.0 and len(edges) < 11
    expected = np.unique(np.quantile(x, np.linspace(0, 1, 11)))
    np.testing.assert_array_equal(edges, expected)


def test_degenerate_columns() -> None:
    const = numeric_stats(np.full(5, 3.5))
    assert const["edges"] == [3.5, 3.5] and const["counts"] == [5] and const["missing"] == 0
    empty = numeric_stats(np.full(4, np.nan))
    assert empty["edges"] == [0.0, 0.0] and empty["counts"] == [0] and empty["missing"] == 4
    with pytest.raises(ValueError, match="bins"):
        numeric_edges(np.arange(3.0), bins=0)


def test_categorical_counts_match_counter_with_other_and_missing() -> None:
    rng = np.random.default_rng(3)
    codes = rng.zipf(1.6, 5000).astype(np.float64) - 1.0  # heavy tail of codes >= 0
    codes[rng.random(codes.size) < 0.05] = np.nan
    codes[:10] = -1.0  # LightGBM reads negative categories as missing
    entry = categorical_stats(codes, max_categories=5)
    present = [int(c) for c in codes if not np.isnan(c) and c >= 0]
    top = sorted(collections.Counter(present).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert entry["kind"] == "categorical"
    assert entry["categories"] == [c for c, _ in top]
    assert entry["counts"] == [n for _, n in top]
    assert entry["other"] == len(present) - sum(n for _, n in top)
    assert entry["missing"] == codes.size - len(present)


def test_categorical_truncates_fractional_codes_and_breaks_ties_by_code() -> None:
    entry = categorical_stats(np.array([2.7, 2.0, 1.0, 1.2, 0.0, np.nan, np.inf, 1e300, -0.5]))
    assert entry["categories"] == [1, 2, 0]
    assert entry["counts"] == [2, 2, 1]
    assert entry["other"] == 0 and entry["missing"] == 4


def test_score_histogram_and_multiclass_summary() -> None:
    rng = np.random.default_rng(4)
    s = rng.beta(1, 20, 3000)
    h = score_stats(s, bins=20)
    assert set(h) == {"edges", "counts"}
    assert len(h["edges"]) == 21 and sum(h["counts"]) == s.size
    np.testing.assert_allclose(h["edges"], np.quantile(s, np.linspace(0, 1, 21)), atol=0)
    p = rng.dirichlet([1, 1, 1], 100)
    hm = score_stats(p, bins=5)
    assert hm == score_stats(p.max(axis=1), bins=5)


def test_reference_stats_shape_and_dataframe_input() -> None:
    rng = np.random.default_rng(5)
    n = 2000
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 4, n).astype(float), rng.random(n)])
    X[::17, 2] = np.nan
    names = ["a", "cat", "c"]
    scores = rng.random(n)
    ref = reference_stats(X, names, scores, categorical=["cat"], bins=8, score_bins=10)
    assert ref["n"] == n
    assert list(ref["features"]) == names
    assert ref["features"]["cat"]["kind"] == "categorical"
    assert ref["features"]["a"] == numeric_stats(X[:, 0], 8)
    assert ref["features"]["c"]["missing"] == int(np.isnan(X[:, 2]).sum())
    assert ref["score"] == score_stats(scores, 10)
    validate_reference(ref, names)
    # JSON round trip keeps it valid (plain ints/floats, finite edges).
    validate_reference(json.loads(json.dumps(ref, allow_nan=False)), names)
    # A DataFrame with extra and reordered columns gives the same result.
    df = pd.DataFrame({"c": X[:, 2], "zzz": 1.0, "cat": X[:, 1], "a": X[:, 0]})
    assert reference_stats(df, names, scores, categorical=["cat"], bins=8, score_bins=10) == ref


def test_extra_rows_count_into_the_features_but_not_the_score() -> None:
    rng = np.random.default_rng(6)
    names = ["a", "cat"]
    holdout = np.column_stack([rng.normal(size=300), rng.integers(0, 5, 300).astype(float)])
    training = np.column_stack([rng.normal(size=900), rng.integers(0, 5, 900).astype(float)])
    scores = rng.random(300)
    ref = reference_stats(holdout, names, scores, categorical=["cat"], bins=6,
                          extra_rows=training)
    both = np.concatenate([holdout, training])
    assert ref["n"] == 1200
    assert ref["features"]["a"] == numeric_stats(both[:, 0], 6)
    assert ref["features"]["cat"] == categorical_stats(both[:, 1])
    assert ref["score"] == score_stats(scores)
    validate_reference(ref, names)
    df = pd.DataFrame({"cat": training[:, 1], "a": training[:, 0]})
    assert reference_stats(holdout, names, scores, categorical=["cat"], bins=6,
                           extra_rows=df) == ref
    with pytest.raises(ValueError, match="expected"):
        reference_stats(holdout, names, scores, extra_rows=training[:, :1])


def test_reference_stats_rejects_bad_input() -> None:
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="expected"):
        reference_stats(X, ["a"], np.zeros(5))
    with pytest.raises(ValueError, match="scores"):
        reference_stats(X, ["a", "b"], np.zeros(4))
    with pytest.raises(ValueError, match="categorical"):
        reference_stats(X, ["a", "b"], np.zeros(5), categorical=["c"])


def test_validate_reference_names_the_problem() -> None:
    good = reference_stats(np.arange(20.0).reshape(10, 2), ["a", "b"], np.linspace(0, 1, 10))
    validate_reference(good, ["a", "b"])
    with pytest.raises(ValueError, match="missing"):
        validate_reference(good, ["a", "b", "c"])
    bad = json.loads(json.dumps(good))
    bad["features"]["a"]["counts"].append(1)
    with pytest.raises(ValueError, match="edges"):
        validate_reference(bad)
    bad = json.loads(json.dumps(good))
    bad["features"]["b"]["kind"] = "weird"
    with pytest.raises(ValueError, match="unknown kind"):
        validate_reference(bad)
    bad = json.loads(json.dumps(good))
    del bad["score"]
    with pytest.raises(ValueError, match="score"):
        validate_reference(bad)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.integers(1, 300),
        elements=st.one_of(
            st.floats(-1e6, 1e6, allow_nan=False),
            st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0]),
        ),
    ),
    st.integers(1, 12),
)
def test_counts_match_naive_binning(x: np.ndarray, bins: int) -> None:
    entry = numeric_stats(x, bins)
    edges = entry["edges"]
    assert all(np.isfinite(edges)) and all(np.diff(edges) >= 0)
    assert len(entry["counts"]) == len(edges) - 1 <= bins
    assert sum(entry["counts"]) + entry["missing"] == x.size
    assert (entry["counts"], entry["missing"]) == _naive_counts(x, edges)
