"""Pure drift statistics: bin layout from the reference, a compiled binning pass, and the
per-window statistics (PSI, Jensen-Shannon, binned KS, Wasserstein) with calibrated
PSI thresholds.

Everything the monitor needs per batch is one call of a numba kernel that adds a batch's
rows to a flat array of bin counts (one block of bins per feature, the last bin of each
block counting missing values). Statistics are computed when a window closes, for all
features at once on a padded (features x bins) matrix, so their cost does not grow with
the number of events.

Binning follows the reference rule of ``scorers.refstats``: numeric bin ``i`` is
``[e_i, e_{i+1})``, values below ``e_0`` go to bin 0, values at or above ``e_B`` to the
last bin, NaN to the missing bin. Categorical values are truncated to integer codes as
LightGBM reads them; NaN, negative, infinite and huge (>= 2^62) codes are missing, codes
outside the reference's categories count in the ``other`` bin.

Calibration. PSI is the symmetric (Jeffreys) divergence ``sum (a - e) ln(a / e)`` of the
window proportions ``a`` and the reference proportions ``e``. Its second-order expansion
is ``sum (a - e)^2 / e``; under no drift both samples come from the same multinomial, the
differences are asymptotically normal with covariance ``(1/n + 1/m)(diag p - p p^T)``,
so ``PSI ~ (1/n + 1/m) chi2(K - 1)`` with ``K`` the reference's non-empty bins. The
threshold for false-alarm rate ``alpha`` is ``(1/n + 1/m) chi2.ppf(1 - alpha, K - 1)``.
Proportions are smoothed with 0.5 pseudo-counts on the bins that are non-empty on either
side (so a bin empty in one sample gives a large but finite PSI, and bins empty on both
sides contribute nothing); the approximation is checked empirically in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from scipy.stats import chi2

__all__ = [
    "CATEGORICAL",
    "NUMERIC",
    "PSEUDO_COUNT",
    "BinLayout",
    "WindowStats",
    "accumulate",
    "build_layout",
    "page_hinkley",
    "psi_level",
    "psi_threshold",
    "window_stats",
]

NUMERIC = 0
CATEGORICAL = 1
PSEUDO_COUNT = 0.5

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BinLayout:
    """Where each feature's bins live in the flat count array, and its reference counts.

    Block ``f`` is ``counts[offset[f]:offset[f + 1]]``: ``n_value[f]`` value bins (for a
    categorical feature the last of them is ``other``), then one missing bin.
    """

    names: tuple[str, ...]
    kinds: npt.NDArray[np.int8]
    offset: IntArray
    n_value: IntArray
    edges: FloatArray
    edge_start: IntArray
    cats: IntArray
    cat_bin: IntArray
    cat_start: IntArray
    ref_counts: FloatArray
    ref_n: FloatArray
    df: IntArray
    # Padded (features x max bins) views for vectorised statistics.
    pad_index: IntArray
    pad_valid: npt.NDArray[np.bool_]
    pad_missing: npt.NDArray[np.bool_]
    centres: FloatArray
    value_width: FloatArray

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def total_bins(self) -> int:
        return int(self.offset[-1])


def _numeric_entry(entry: Mapping[str, Any]) -> tuple[FloatArray, list[float]]:
    edges = np.asarray(entry["edges"], dtype=np.float64)
    counts = [float(c) for c in entry["counts"]] + [float(entry.get("missing", 0))]
    return edges, counts


def build_layout(
    entries: Sequence[tuple[str, Mapping[str, Any]]], reference_n: int | None = None
) -> BinLayout:
    """The layout of ``(name, reference entry)`` pairs in the shared reference shape.

    A score entry (``{"edges", "counts"}`` without ``kind``) is treated as numeric.
    ``reference_n`` is only a fallback for an empty block.
    """
    names: list[str] = []
    kinds: list[int] = []
    n_value: list[int] = []
    edges: list[float] = []
    edge_start = [0]
    cats: list[int] = []
    cat_bin: list[int] = []
    cat_start = [0]
    ref_counts: list[float] = []
    offset = [0]
    for name, entry in entries:
        kind = entry.get("kind", "numeric")
        names.append(name)
        if kind == "categorical":
            codes = [int(c) for c in entry["categories"]]
            order = np.argsort(codes, kind="stable")
            cats.extend(int(codes[i]) for i in order)
            cat_bin.extend(int(i) for i in order)
            counts = [float(c) for c in entry["counts"]]
            counts += [float(entry.get("other", 0)), float(entry.get("missing", 0))]
            kinds.append(CATEGORICAL)
            n_value.append(len(codes) + 1)
        else:
            e, counts = _numeric_entry(entry)
            edges.extend(float(x) for x in e)
            kinds.append(NUMERIC)
            n_value.append(max(e.size - 1, 1))
        edge_start.append(len(edges))
        cat_start.append(len(cats))
        ref_counts.extend(counts)
        offset.append(offset[-1] + len(counts))
    f = len(names)
    ref = np.asarray(ref_counts, dtype=np.float64)
    off = np.asarray(offset, dtype=np.int64)
    ref_n = np.add.reduceat(ref, off[:-1]) if f else np.zeros(0)
    if reference_n:
        ref_n = np.where(ref_n > 0, ref_n, float(reference_n))
    width = int(max(np.diff(off).max(initial=1), 1))
    pad_index = np.zeros((f, width), dtype=np.int64)
    pad_valid = np.zeros((f, width), dtype=bool)
    pad_missing = np.zeros((f, width), dtype=bool)
    centres = np.zeros((f, width))
    value_width = np.zeros((f, width))
    df = np.zeros(f, dtype=np.int64)
    es = np.asarray(edge_start, dtype=np.int64)
    all_edges = np.asarray(edges, dtype=np.float64)
    for j in range(f):
        size = int(off[j + 1] - off[j])
        pad_index[j, :size] = np.arange(off[j], off[j + 1])
        pad_valid[j, :size] = True
        pad_missing[j, size - 1] = True
        df[j] = max(int(np.count_nonzero(ref[off[j] : off[j + 1]])) - 1, 0)
        if kinds[j] == NUMERIC:
            e = all_edges[es[j] : es[j + 1]]
            c = (e[:-1] + e[1:]) / 2.0 if e.size > 1 else e[:1]
            centres[j, : c.size] = c
            # Distance from centre i to centre i+1, used by the Wasserstein sum.
            value_width[j, : c.size - 1] = np.diff(c)
    return BinLayout(
        names=tuple(names),
        kinds=np.asarray(kinds, dtype=np.int8),
        offset=off,
        n_value=np.asarray(n_value, dtype=np.int64),
        edges=all_edges,
        edge_start=es,
        cats=np.asarray(cats, dtype=np.int64),
        cat_bin=np.asarray(cat_bin, dtype=np.int64),
        cat_start=np.asarray(cat_start, dtype=np.int64),
        ref_counts=ref,
        ref_n=np.asarray(ref_n, dtype=np.float64),
        df=df,
        pad_index=pad_index,
        pad_valid=pad_valid,
        pad_missing=pad_missing,
        centres=centres,
        value_width=value_width,
    )


@numba.njit(cache=True, nogil=True)
def _accumulate(  # pragma: no cover - compiled
    X: Any, r0: int, r1: int, cols: Any, kinds: Any, offset: Any, n_value: Any,
    edges: Any, edge_start: Any, cats: Any, cat_bin: Any, cat_start: Any, counts: Any,
) -> None:
    n_feat = cols.shape[0]
    for i in range(r0, r1):
        for f in range(n_feat):
            x = X[i, cols[f]]
            nv = n_value[f]
            b = nv  # the missing bin
            if kinds[f] == 0:
                if not np.isnan(x):
                    s = edge_start[f]
                    lo = 0
                    hi = edge_start[f + 1] - s
                    while lo < hi:  # number of edges <= x
                        mid = (lo + hi) >> 1
                        if edges[s + mid] <= x:
                            lo = mid + 1
                        else:
                            hi = mid
                    b = lo - 1
                    if b < 0:
                        b = 0
                    elif b >= nv:
                        b = nv - 1
            elif x >= 0.0 and x < 4.611686018427388e18:
                # NaN, negative, infinite and huge codes stay missing: LightGBM's int cast
                # of those gives a negative code, which it treats as missing.
                b = nv - 1  # other
                code = np.int64(x)
                s = cat_start[f]
                lo = s
                hi = cat_start[f + 1]
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if cats[mid] < code:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < cat_start[f + 1] and cats[lo] == code:
                    b = cat_bin[lo]
            counts[offset[f] + b] += 1


def accumulate(
    layout: BinLayout, X: FloatArray, counts: IntArray, r0: int = 0, r1: int | None = None,
    cols: IntArray | None = None, features: slice | None = None,
) -> None:
    """Add rows ``r0:r1`` of ``X`` to ``counts`` (the flat bins of ``layout``).

    ``features`` selects a contiguous run of the layout's features (default all) and
    ``cols`` their columns in ``X`` (default 0, 1, ...). ``counts`` is indexed by the
    layout's global offsets, so several calls can fill one array.
    """
    sel = features or slice(0, layout.n_features)
    start, stop, _ = sel.indices(layout.n_features)
    if cols is None:
        cols = np.arange(stop - start, dtype=np.int64)
    if X.ndim != 2 or cols.shape[0] != stop - start or (
        cols.size and (cols.min() < 0 or cols.max() >= X.shape[1])
    ):
        # The kernel does not bounds-check; a wrong column would read other memory.
        raise ValueError(f"columns {cols.tolist()} do not fit X of shape {X.shape}")
    _accumulate(
        X, r0, X.shape[0] if r1 is None else r1, cols,
        layout.kinds[start:stop], layout.offset[start:], layout.n_value[start:stop],
        layout.edges, layout.edge_start[start:], layout.cats, layout.cat_bin,
        layout.cat_start[start:], counts,
    )


@numba.njit(cache=True, nogil=True)
def _page_hinkley(  # pragma: no cover - compiled
    x: Any, state: Any, delta: float, threshold: float, min_instances: int
) -> int:
    alarms = 0
    for i in range(x.shape[0]):
        v = x[i]
        if np.isnan(v):
            continue
        state[0] += 1.0
        state[1] += (v - state[1]) / state[0]
        state[2] += v - state[1] - delta
        state[3] = min(state[3], state[2])
        state[4] += v - state[1] + delta
        state[5] = max(state[5], state[4])
        if state[0] >= min_instances and (
            state[2] - state[3] > threshold or state[5] - state[4] > threshold
        ):
            alarms += 1
            for k in range(6):
                state[k] = 0.0
    return alarms


def page_hinkley(
    x: FloatArray, state: FloatArray, delta: float, threshold: float, min_instances: int = 30
) -> int:
    """Run a two-sided Page-Hinkley test over ``x``; return how many changes it detected.

    ``state`` (6 floats: count, running mean, cumulative sums and their extrema) carries
    over between calls; after a detection the detector restarts, as river's does.
    """
    return int(_page_hinkley(x, state, float(delta), float(threshold), int(min_instances)))


def psi_threshold(n: Any, m: Any, df: Any, alpha: float) -> Any:
    """PSI threshold of a window of ``n`` events vs ``m`` reference events, ``df`` = K - 1."""
    return (1.0 / n + 1.0 / m) * chi2.ppf(1.0 - alpha, np.maximum(df, 1)) * (np.asarray(df) > 0)


def psi_level(psi: float) -> str:
    """The conventional reading: < 0.1 stable, < 0.25 moderate, else significant."""
    return "stable" if psi < 0.1 else "moderate" if psi < 0.25 else "significant"


@dataclass(frozen=True)
class WindowStats:
    """Per-feature statistics of one window (arrays in layout order; NaN = not defined)."""

    psi: FloatArray
    threshold: FloatArray
    js: FloatArray
    ks: FloatArray
    wasserstein: FloatArray
    missing_rate: FloatArray
    reference_missing_rate: FloatArray
    n: FloatArray

    @property
    def alarm(self) -> npt.NDArray[np.bool_]:
        return self.psi > self.threshold


def _smoothed(counts: FloatArray, active: npt.NDArray[np.bool_]) -> FloatArray:
    c = np.where(active, counts + PSEUDO_COUNT, 0.0)
    total = c.sum(axis=1, keepdims=True)
    return c / np.where(total > 0, total, 1.0)


def _proportions(counts: FloatArray) -> FloatArray:
    total = counts.sum(axis=1, keepdims=True)
    return counts / np.where(total > 0, total, 1.0)


def window_stats(layout: BinLayout, counts: Any, alpha: float) -> WindowStats:
    """All statistics of a window whose flat bin counts are ``counts``."""
    flat = np.asarray(counts, dtype=np.float64)
    valid = layout.pad_valid
    win = np.where(valid, flat[layout.pad_index], 0.0)
    ref = np.where(valid, layout.ref_counts[layout.pad_index], 0.0)
    n = win.sum(axis=1)
    m = layout.ref_n

    active = valid & ((win > 0) | (ref > 0))
    a = _smoothed(win, active)
    e = _smoothed(ref, active)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(active, (a - e) * np.log(np.where(active, a, 1.0) /
                                                   np.where(active, e, 1.0)), 0.0)
    psi = terms.sum(axis=1)

    p = _proportions(win)
    q = _proportions(ref)
    mid = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / np.where(mid > 0, mid, 1.0)), 0)
        kl_q = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0) / np.where(mid > 0, mid, 1.0)), 0)
    js = np.sqrt(np.maximum((kl_p.sum(axis=1) + kl_q.sum(axis=1)) / 2.0, 0.0))

    # KS and Wasserstein: numeric features, present values only (missing bin excluded).
    values = valid & ~layout.pad_missing
    wv = _proportions(np.where(values, win, 0.0))
    rv = _proportions(np.where(values, ref, 0.0))
    gap = np.abs(np.cumsum(wv, axis=1) - np.cumsum(rv, axis=1))
    ks = gap.max(axis=1)
    wasserstein = (gap * layout.value_width).sum(axis=1)
    numeric = layout.kinds == NUMERIC
    has_values = np.where(values, win, 0.0).sum(axis=1) > 0
    ks = np.where(numeric & has_values, ks, np.nan)
    wasserstein = np.where(numeric & has_values, wasserstein, np.nan)

    miss_win = np.where(layout.pad_missing, win, 0.0).sum(axis=1)
    miss_ref = np.where(layout.pad_missing, ref, 0.0).sum(axis=1)
    safe_n = np.where(n > 0, n, 1.0)
    return WindowStats(
        psi=psi,
        threshold=np.asarray(psi_threshold(safe_n, m, layout.df, alpha), dtype=np.float64),
        js=js,
        ks=ks,
        wasserstein=wasserstein,
        missing_rate=miss_win / safe_n,
        reference_missing_rate=miss_ref / np.where(m > 0, m, 1.0),
        n=n,
    )
