"""Drift binning kernel: numeric counts bit-identical to ``numpy.searchsorted`` on
adversarial edges and values (NaN, +-inf, values equal to or next to edges, repeated
edges, one-edge and huge- or tiny-span features), across row blocks and with the score."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.drift.stats import BLOCK_ROWS, accumulate, build_layout

# Edge values: a few "round" ones (so edges repeat and values hit them exactly), plus
# extremes whose differences overflow or underflow.
_EDGE_POOL = [-1e308, -3.5, -1.0, -0.0, 0.0, 5e-324, 1e-300, 0.25, 1.0, 1.0 + 2**-52,
              7.0, 1e300, 1.7976931348623157e308]
_edge = st.one_of(st.sampled_from(_EDGE_POOL),
                  st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
_edges = st.lists(_edge, min_size=1, max_size=24).map(sorted)


def oracle(edges: list[float], x: np.ndarray) -> np.ndarray:
    """Counts of one numeric feature under the reference rule: bin = number of inner
    edges <= x (searchsorted right), NaN in the missing bin after the value bins."""
    e = np.asarray(edges, dtype=np.float64)
    nv = max(e.size - 1, 1)
    counts = np.zeros(nv + 1, dtype=np.int64)
    finite = ~np.isnan(x)
    np.add.at(counts, np.searchsorted(e[1:-1], x[finite], side="right"), 1)
    counts[nv] = np.count_nonzero(~finite)
    return counts


def values_for(data: st.DataObject, edges: list[float], n: int) -> np.ndarray:
    """n values: edges themselves and their float neighbours, specials, random reals."""
    with np.errstate(over="ignore"):  # the neighbours of +-max are +-inf
        near = [v for e in edges for v in (e, np.nextafter(e, -np.inf),
                                           np.nextafter(e, np.inf))]
    pool = [*near, np.nan, np.inf, -np.inf, 0.0, -0.0]
    picks = data.draw(st.lists(st.one_of(st.sampled_from(pool), st.floats(allow_nan=True)),
                               min_size=n, max_size=n))
    return np.asarray(picks, dtype=np.float64)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), features=st.lists(_edges, min_size=1, max_size=4),
       rows=st.integers(1, 3 * BLOCK_ROWS + 1), with_score=st.booleans())
def test_numeric_counts_match_searchsorted(data, features, rows, with_score):
    entries = [(f"f{j}", {"kind": "numeric", "edges": e, "counts": [0] * max(len(e) - 1, 1),
                          "missing": 0}) for j, e in enumerate(features)]
    layout = build_layout(entries)
    cols = np.stack([values_for(data, e, rows) for e in features], axis=1)
    counts = np.zeros(layout.total_bins, dtype=np.int64)
    if with_score:  # the last feature passed as the separate score column
        accumulate(layout, np.ascontiguousarray(cols[:, :-1]), counts,
                   scores=np.ascontiguousarray(cols[:, -1]))
    else:
        accumulate(layout, cols, counts)
    expected = np.concatenate([oracle(e, cols[:, j]) for j, e in enumerate(features)])
    np.testing.assert_array_equal(counts, expected)


def test_repeated_edges_and_one_edge_feature():
    """Fixed cases: a quantile layout with runs of equal edges, a single edge."""
    edges = [0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0]
    x = np.array([np.nan, -np.inf, 0.0, 0.999, 1.0, 1.5, 2.0, 2.5, 3.0, np.inf])
    layout = build_layout([("a", {"kind": "numeric", "edges": edges, "counts": [0] * 6}),
                           ("b", {"kind": "numeric", "edges": [4.0], "counts": [0]})])
    counts = np.zeros(layout.total_bins, dtype=np.int64)
    accumulate(layout, np.stack([x, x], axis=1), counts)
    # a: bins 0..5 (bins 1, 2 and 4 empty: zero-width), missing; b: one bin, missing.
    np.testing.assert_array_equal(counts, [3, 0, 0, 2, 0, 4, 1, 9, 1])
    np.testing.assert_array_equal(counts[:7], oracle(edges, x))
