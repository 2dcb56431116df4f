"""Reference statistics for drift monitoring, computed once from a model's training data.

The drift monitor compares live windows against what the model saw in training. This
module computes that reference in the shape the model registry stores (see the shared
conventions):

``{"n": int, "features": {name: numeric | categorical}, "score": {"edges", "counts"}}``

- numeric: ``{"kind": "numeric", "edges": [B+1 finite floats], "counts": [B], "missing"}``.
  Edges are training quantiles (first = minimum, last = maximum). Bins are
  ``[e_i, e_{i+1})``; values below ``e_0`` (incl. -inf) fall in bin 0 and values at or
  above ``e_B`` (incl. +inf) in the last bin. :func:`bin_index` is that rule, so the live
  side bins exactly as the reference did.
- categorical: ``{"kind": "categorical", "categories": [codes], "counts", "other",
  "missing"}``: the most frequent integer codes, the rest pooled in ``other``.

Everything is vectorized numpy: one sort per numeric feature, one ``bincount`` per
histogram.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "bin_counts",
    "bin_index",
    "categorical_codes",
    "categorical_stats",
    "numeric_edges",
    "numeric_stats",
    "reference_stats",
    "score_stats",
    "validate_reference",
]

DEFAULT_BINS = 10
DEFAULT_SCORE_BINS = 20
DEFAULT_MAX_CATEGORIES = 20

_HUGE_CODE = 2.0**62

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _as_float_column(values: Any) -> FloatArray:
    col = np.asarray(values, dtype=np.float64)
    if col.ndim != 1:
        raise ValueError(f"expected a 1-D column, got shape {col.shape}")
    return col


def numeric_edges(values: Any, bins: int = DEFAULT_BINS) -> FloatArray:
    """Quantile bin edges of the finite values (B+1 finite floats, B <= ``bins``).

    Continuous features get ``bins`` equal-mass bins; ties collapse duplicate quantiles,
    so a feature with point masses gets fewer, wider bins. A discrete feature with at most
    ``bins`` distinct values gets one bin per value instead (edges at the minimum, the
    midpoints between neighbouring values, and the maximum), because collapsing its
    quantiles would merge the two largest values into one bin and hide shifts between
    them. A column without finite values gets the degenerate edges ``[0, 0]`` (one bin).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    col = _as_float_column(values)
    finite = np.sort(col[np.isfinite(col)])
    if finite.size == 0:
        return np.zeros(2)
    distinct = np.unique(finite)
    if distinct.size == 1:
        return np.array([distinct[0], distinct[0]])
    if distinct.size <= bins:
        mids = distinct[:-1] + np.diff(distinct) / 2.0
        return np.concatenate(([distinct[0]], mids, [distinct[-1]]))
    # Linear-interpolated quantiles of the sorted finite values (numpy's default method),
    # computed on the already sorted array to avoid a second sort.
    edges = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1))
    edges[0], edges[-1] = finite[0], finite[-1]
    return np.unique(edges)


def bin_index(values: Any, edges: Sequence[float] | FloatArray) -> IntArray:
    """Bin of each value under the reference rule; NaN gives -1 (the missing bin).

    Bin i is ``[e_i, e_{i+1})``; below ``e_0`` goes to bin 0, at or above ``e_B`` to the
    last bin (so the maximum itself and +inf land in the last bin).
    """
    col = _as_float_column(values)
    e = np.asarray(edges, dtype=np.float64)
    n_bins = max(e.size - 1, 1)
    idx = np.searchsorted(e, col, side="right") - 1
    np.clip(idx, 0, n_bins - 1, out=idx)
    idx[np.isnan(col)] = -1
    return idx.astype(np.int64, copy=False)


def bin_counts(values: Any, edges: Sequence[float] | FloatArray) -> tuple[IntArray, int]:
    """Counts per bin (length B) and the number of missing (NaN) values."""
    idx = bin_index(values, edges)
    n_bins = max(len(edges) - 1, 1)
    present = idx[idx >= 0]
    counts = np.bincount(present, minlength=n_bins).astype(np.int64)
    return counts, int(idx.size - present.size)


def numeric_stats(values: Any, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Reference entry of one numeric feature."""
    col = _as_float_column(values)
    edges = numeric_edges(col, bins)
    counts, missing = bin_counts(col, edges)
    return {
        "kind": "numeric",
        "edges": [float(x) for x in edges],
        "counts": [int(c) for c in counts],
        "missing": missing,
    }


def categorical_codes(values: Any) -> IntArray:
    """Integer category codes as LightGBM reads them; -1 marks missing.

    LightGBM truncates a categorical value to an integer and treats NaN and negative
    values as missing; the reference does the same so its bins mean what the model saw.
    Infinite and huge (>= 2^62) values are missing too: their integer cast is negative.
    """
    col = _as_float_column(values)
    missing = ~np.isfinite(col) | (col < 0) | (col >= _HUGE_CODE)
    codes = np.where(missing, -1.0, np.trunc(np.where(missing, 0.0, col)))
    return codes.astype(np.int64)


def categorical_stats(values: Any, max_categories: int = DEFAULT_MAX_CATEGORIES) -> dict[str, Any]:
    """Reference entry of one categorical feature (codes ordered by count, then code)."""
    if max_categories < 1:
        raise ValueError(f"max_categories must be >= 1, got {max_categories}")
    codes = categorical_codes(values)
    present = codes[codes >= 0]
    uniq, counts = np.unique(present, return_counts=True)
    # Most frequent first; ties by smaller code (np.unique already sorted codes, and a
    # stable sort on -count keeps that order).
    order = np.argsort(-counts, kind="stable")[:max_categories]
    kept = int(counts[order].sum())
    return {
        "kind": "categorical",
        "categories": [int(c) for c in uniq[order]],
        "counts": [int(c) for c in counts[order]],
        "other": int(present.size - kept),
        "missing": int(codes.size - present.size),
    }


def score_stats(scores: Any, bins: int = DEFAULT_SCORE_BINS) -> dict[str, Any]:
    """Histogram of the model's scores on quantile edges (``{"edges", "counts"}``).

    Multiclass scores (rows x classes) are summarised by the top-class probability.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2:
        s = s[:, 0] if s.shape[1] == 1 else s.max(axis=1)
    entry = numeric_stats(s, bins)
    return {"edges": entry["edges"], "counts": entry["counts"]}


def reference_stats(
    X: Any,
    feature_names: Sequence[str],
    scores: Any,
    *,
    categorical: Sequence[str] = (),
    bins: int = DEFAULT_BINS,
    score_bins: int = DEFAULT_SCORE_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    extra_rows: Any = None,
) -> dict[str, Any]:
    """The full reference of a model: every feature of ``X`` (rows x features) and the score.

    ``X`` is a float matrix in ``feature_names`` order (NaN for missing) or a pandas
    DataFrame holding those columns; ``scores`` are the model's outputs on the same rows.

    ``extra_rows`` (same layout as ``X``, no scores: typically the training rows when
    ``X`` is the holdout) are counted into the feature histograms, edges included. A
    drift window is compared with the reference's bin proportions, which are estimates:
    their sampling error stays fixed for the model's life, and a window of ``n`` events
    is calibrated per feature only if the reference has enough rows for it
    (``stream.drift.calibration.min_reference_rows``: ~66,000 for 5,000-event windows
    at alpha = 0.01). The score histogram uses ``X``'s scores only (the model's scores
    on its own training rows are optimistic). ``n`` is then the rows of the feature
    histograms; the score's count is the sum of its counts.
    """
    names = list(feature_names)
    unknown = set(categorical) - set(names)
    if unknown:
        raise ValueError(f"categorical features not in feature_names: {sorted(unknown)}")
    matrix = _feature_matrix(X, names)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[0] != matrix.shape[0]:
        raise ValueError(f"{s.shape[0]} scores for {matrix.shape[0]} rows")
    if extra_rows is not None:
        matrix = np.concatenate([matrix, _feature_matrix(extra_rows, names)])
    cats = set(categorical)
    features: dict[str, Any] = {}
    for j, name in enumerate(names):
        col = matrix[:, j]
        features[name] = (
            categorical_stats(col, max_categories) if name in cats else numeric_stats(col, bins)
        )
    return {"n": int(matrix.shape[0]), "features": features, "score": score_stats(s, score_bins)}


def _feature_matrix(X: Any, names: list[str]) -> FloatArray:
    """``X`` as a float matrix in ``names`` order (a DataFrame: its columns by name)."""
    if hasattr(X, "columns"):
        matrix = np.column_stack([np.asarray(X[n], dtype=np.float64) for n in names])
    else:
        matrix = np.asarray(X, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise ValueError(
            f"X has shape {matrix.shape}, expected (rows, {len(names)}) for {len(names)} features"
        )
    return matrix


def _check_hist(where: str, edges: Any, counts: Any) -> None:
    if not isinstance(edges, list) or not isinstance(counts, list):
        raise ValueError(f"{where}: edges and counts must be lists")
    if len(edges) != len(counts) + 1 or len(counts) < 1:
        raise ValueError(f"{where}: {len(edges)} edges for {len(counts)} counts")
    e = np.asarray(edges, dtype=np.float64)
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) < 0):
        raise ValueError(f"{where}: edges must be finite and non-decreasing")
    if any(not isinstance(c, int) or c < 0 for c in counts):
        raise ValueError(f"{where}: counts must be non-negative integers")


def validate_reference(
    reference: Mapping[str, Any], feature_names: Sequence[str] | None = None
) -> None:
    """Raise ``ValueError`` naming the first way ``reference`` breaks the shared shape."""
    if not isinstance(reference, Mapping):
        raise ValueError("reference must be an object")
    n = reference.get("n")
    if not isinstance(n, int) or n < 0:
        raise ValueError("reference.n must be a non-negative integer")
    feats = reference.get("features")
    if not isinstance(feats, Mapping):
        raise ValueError("reference.features must be an object")
    if feature_names is not None and list(feats) != list(feature_names):
        missing = [f for f in feature_names if f not in feats]
        raise ValueError(
            f"reference.features do not match the model's features (missing: {missing})"
            if missing
            else "reference.features are not in the model's feature order"
        )
    for name, entry in feats.items():
        where = f"reference.features[{name!r}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be an object")
        kind = entry.get("kind")
        if kind == "numeric":
            _check_hist(where, entry.get("edges"), entry.get("counts"))
        elif kind == "categorical":
            cats, counts = entry.get("categories"), entry.get("counts")
            if not isinstance(cats, list) or not isinstance(counts, list):
                raise ValueError(f"{where}: categories and counts must be lists")
            if len(cats) != len(counts):
                raise ValueError(f"{where}: {len(cats)} categories for {len(counts)} counts")
            if not isinstance(entry.get("other"), int):
                raise ValueError(f"{where}: other must be an integer")
        else:
            raise ValueError(f"{where}: unknown kind {kind!r}")
        if not isinstance(entry.get("missing"), int):
            raise ValueError(f"{where}: missing must be an integer")
    score = reference.get("score")
    if not isinstance(score, Mapping):
        raise ValueError("reference.score must be an object")
    _check_hist("reference.score", score.get("edges"), score.get("counts"))
