"""Pure drift statistics: bin layout from the reference, a compiled binning pass, and the
per-window statistics (PSI, Jensen-Shannon, binned KS, Wasserstein) with calibrated
PSI thresholds.

Everything the monitor needs per batch is one call of a numba kernel that adds a batch's
rows to a flat array of bin counts (one block of bins per feature, the last bin of each
block counting missing values). Statistics are computed when a window closes, by a second
kernel over the flat counts (O(bins)), so their cost does not grow with the number of
events.

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

import functools
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
    "chi2_quantiles",
    "page_hinkley",
    "psi_level",
    "psi_threshold",
    "update_counts",
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

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def total_bins(self) -> int:
        return int(self.offset[-1])

    @functools.cached_property
    def kernel_args(self) -> tuple[Any, ...]:
        """The arrays the binning kernel reads, in its argument order."""
        return (self.kinds, self.offset, self.n_value, self.edges, self.edge_start,
                self.cats, self.cat_bin, self.cat_start)


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
    df = np.asarray([max(int(np.count_nonzero(ref[off[j] : off[j + 1]])) - 1, 0)
                     for j in range(f)], dtype=np.int64)
    return BinLayout(
        names=tuple(names),
        kinds=np.asarray(kinds, dtype=np.int8),
        offset=off,
        n_value=np.asarray(n_value, dtype=np.int64),
        edges=np.asarray(edges, dtype=np.float64),
        edge_start=np.asarray(edge_start, dtype=np.int64),
        cats=np.asarray(cats, dtype=np.int64),
        cat_bin=np.asarray(cat_bin, dtype=np.int64),
        cat_start=np.asarray(cat_start, dtype=np.int64),
        ref_counts=ref,
        ref_n=np.asarray(ref_n, dtype=np.float64),
        df=df,
    )


@numba.njit(cache=True, nogil=True)
def _accumulate(  # pragma: no cover - compiled
    X: Any, S: Any, r0: int, r1: int, kinds: Any, offset: Any, n_value: Any,
    edges: Any, edge_start: Any, cats: Any, cat_bin: Any, cat_start: Any, counts: Any,
) -> None:
    # Feature f < X.shape[1] is column f of X; the next one (the score) is S.
    # Feature by feature: the column is copied once into a contiguous buffer, then a
    # numeric bin is the number of inner edges <= x, counted edge by edge over the whole
    # column (a branch-free loop LLVM vectorises; ~10x faster than a binary search per
    # value). NaN compares false everywhere and is sent to the missing bin at the end.
    n = r1 - r0
    n_x = X.shape[1]
    col = np.empty(n, dtype=np.float64)
    idx = np.empty(n, dtype=np.int64)
    for f in range(kinds.shape[0]):
        off = offset[f]
        nv = n_value[f]
        if f < n_x:
            for i in range(n):
                col[i] = X[r0 + i, f]
        else:
            for i in range(n):
                col[i] = S[r0 + i]
        for i in range(n):
            idx[i] = 0
        if kinds[f] == 0:
            s = edge_start[f]
            for k in range(s + 1, s + nv):
                e = edges[k]
                for i in range(n):
                    idx[i] += col[i] >= e
            for i in range(n):
                counts[off + (nv if np.isnan(col[i]) else idx[i])] += 1
            continue
        lo0 = cat_start[f]
        hi0 = cat_start[f + 1]
        for i in range(n):
            x = col[i]
            b = nv  # missing: NaN, negative, infinite and huge codes, which LightGBM's
            # int cast turns into negative codes and treats as missing
            if x >= 0.0 and x < 4.611686018427388e18:
                b = nv - 1  # other
                code = np.int64(x)
                lo = lo0
                hi = hi0
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if cats[mid] < code:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < hi0 and cats[lo] == code:
                    b = cat_bin[lo]
            counts[off + b] += 1


_NO_SCORES = np.zeros(0)


def accumulate(
    layout: BinLayout, X: FloatArray, counts: IntArray, r0: int = 0, r1: int | None = None,
    scores: FloatArray | None = None,
) -> None:
    """Add rows ``r0:r1`` to ``counts`` (the flat bins of ``layout``).

    ``X`` holds the layout's features in order, one column each (C-contiguous float64);
    with ``scores`` (1-D), ``X`` holds all but the last feature and ``scores`` is it.
    """
    r1 = X.shape[0] if r1 is None else r1
    s = _NO_SCORES if scores is None else scores
    width = layout.n_features - (scores is not None)
    # The kernel does not bounds-check: a wrong shape would read other memory.
    if X.ndim != 2 or X.shape[1] != width or not 0 <= r0 <= r1 <= X.shape[0] or (
        scores is not None and (s.ndim != 1 or s.shape[0] < r1)
    ):
        raise ValueError(f"X of shape {X.shape} (rows {r0}:{r1}) does not fit "
                         f"{layout.n_features} features")
    _accumulate(X, s, r0, r1, *layout.kernel_args, counts)  # type: ignore[call-arg]


@numba.njit(cache=True, nogil=True)
def _page_hinkley(  # pragma: no cover - compiled
    x: Any, r0: int, r1: int, state: Any, mu: float, sigma: float, delta: float,
    threshold: float, min_instances: float,
) -> int:
    alarms = 0
    for i in range(r0, r1):
        v = (x[i] - mu) / sigma
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
    return int(_page_hinkley(x, 0, x.shape[0], state, 0.0, 1.0, float(delta),
                             float(threshold), float(min_instances)))


@numba.njit(cache=True, nogil=True)
def _update(  # pragma: no cover - compiled
    X: Any, S: Any, codes: Any, r0: int, r1: int, kinds: Any, offset: Any, n_value: Any,
    edges: Any, edge_start: Any, cats: Any, cat_bin: Any, cat_start: Any, counts: Any,
    decisions: Any, ph_state: Any, ph: Any,
) -> int:
    _accumulate(X, S, r0, r1, kinds, offset, n_value, edges, edge_start, cats, cat_bin,
                cat_start, counts)
    if codes.shape[0] > 0:
        k = decisions.shape[0] - 1
        for i in range(r0, r1):
            c = codes[i]
            decisions[c if 0 <= c < k else k] += 1
    if ph[5] > 0:
        return _page_hinkley(S, r0, r1, ph_state, ph[0], ph[1], ph[2], ph[3], ph[4])
    return 0


_NO_CODES = np.zeros(0, dtype=np.int64)
_NO_COUNTS = np.zeros(1, dtype=np.int64)
_NO_STATE = np.zeros(6)
_PH_OFF = np.zeros(6)


def update_counts(
    layout: BinLayout, X: FloatArray, scores: FloatArray, r0: int, r1: int,
    counts: IntArray, codes: Any = None, decisions: IntArray | None = None,
    ph_state: FloatArray | None = None, ph: FloatArray | None = None,
) -> int:
    """One compiled pass over rows ``r0:r1`` of a scored batch.

    Adds the rows to the bin ``counts`` (``X`` holds the layout's features but the last,
    ``scores`` is the last), decision ``codes`` to ``decisions`` (codes outside
    ``0..len-2`` in the last slot) and, when ``ph`` = ``[mu, sigma, delta, threshold,
    min_instances, enabled]`` is given, runs Page-Hinkley on the standardised scores.
    Returns the number of Page-Hinkley detections.
    """
    if (X.ndim != 2 or X.shape[1] != layout.n_features - 1 or scores.ndim != 1
            or not 0 <= r0 <= r1 <= min(X.shape[0], scores.shape[0])
            or (codes is not None and codes.shape[0] < r1)):
        # The kernel does not bounds-check: a wrong shape would read other memory.
        raise ValueError(f"X of shape {X.shape} (rows {r0}:{r1}) does not fit "
                         f"{layout.n_features - 1} features and a score")
    return int(_update(  # type: ignore[call-arg]
        X, scores, _NO_CODES if codes is None else codes, r0, r1, *layout.kernel_args,
        counts, _NO_COUNTS if decisions is None else decisions,
        _NO_STATE if ph_state is None else ph_state, _PH_OFF if ph is None else ph,
    ))


def chi2_quantiles(df: Any, alpha: float) -> FloatArray:
    """``chi2.ppf(1 - alpha, df)`` per feature, 0 where ``df`` = 0 (a single non-empty
    reference bin: then any change at all is drift)."""
    d = np.asarray(df, dtype=np.float64)
    q = np.asarray(chi2.ppf(1.0 - alpha, np.maximum(d, 1.0)), dtype=np.float64)
    return np.where(d > 0, q, 0.0)


def psi_threshold(n: Any, m: Any, df: Any, alpha: float) -> Any:
    """PSI threshold of a window of ``n`` events vs ``m`` reference events, ``df`` = K - 1."""
    return (1.0 / np.asarray(n) + 1.0 / np.asarray(m)) * chi2_quantiles(df, alpha)


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


@numba.njit(cache=True, nogil=True)
def _stats(  # pragma: no cover - compiled
    win: Any, ref: Any, ref_n: Any, quantiles: Any, offset: Any, n_value: Any, kinds: Any,
    edges: Any, edge_start: Any, pseudo: float, out: Any,
) -> None:
    # out columns: psi, js, ks, wasserstein, missing rate, reference missing rate, n,
    # threshold.
    for f in range(offset.shape[0] - 1):
        lo = offset[f]
        hi = offset[f + 1]
        n = 0.0
        m = 0.0
        k_active = 0
        for j in range(lo, hi):
            n += win[j]
            m += ref[j]
            if win[j] > 0 or ref[j] > 0:
                k_active += 1
        # PSI on proportions smoothed over the bins non-empty on either side.
        sa = n + pseudo * k_active
        se = m + pseudo * k_active
        psi = 0.0
        js = 0.0
        for j in range(lo, hi):
            w = win[j]
            r = ref[j]
            if w > 0 or r > 0:
                a = (w + pseudo) / sa
                e = (r + pseudo) / se
                psi += (a - e) * np.log(a / e)
            p = w / n if n > 0 else 0.0
            q = r / m if m > 0 else 0.0
            mid = (p + q) / 2.0
            if p > 0:
                js += p * np.log(p / mid) / 2.0
            if q > 0:
                js += q * np.log(q / mid) / 2.0
        out[f, 0] = psi
        out[f, 1] = np.sqrt(max(js, 0.0))
        miss = hi - 1
        safe_n = n if n > 0 else 1.0
        mref = ref_n[f] if ref_n[f] > 0 else 1.0
        out[f, 4] = win[miss] / safe_n
        out[f, 5] = ref[miss] / mref
        out[f, 6] = n
        out[f, 7] = (1.0 / safe_n + 1.0 / mref) * quantiles[f]
        nw = n - win[miss]
        if kinds[f] != 0 or nw <= 0:
            out[f, 2] = np.nan
            out[f, 3] = np.nan
            continue
        # Binned KS and Wasserstein (on bin centres) over present values only.
        nr = m - ref[miss]
        nr = nr if nr > 0 else 1.0
        cw = 0.0
        cr = 0.0
        ks = 0.0
        wd = 0.0
        s = edge_start[f]
        nv = n_value[f]
        for i in range(nv):
            cw += win[lo + i] / nw
            cr += ref[lo + i] / nr
            gap = abs(cw - cr)
            ks = max(ks, gap)
            if i < nv - 1:
                # centre i+1 - centre i = (e_{i+2} - e_i) / 2
                wd += gap * (edges[s + i + 2] - edges[s + i]) / 2.0
        out[f, 2] = ks
        out[f, 3] = wd


def window_stats(
    layout: BinLayout, counts: Any, alpha: float, quantiles: FloatArray | None = None
) -> WindowStats:
    """All statistics of a window whose flat bin counts are ``counts``.

    Per feature, over its block of bins (missing bin included):

    - ``psi``: ``sum (a - e) ln(a / e)`` on proportions smoothed with ``PSEUDO_COUNT``
      on the bins non-empty in the window or the reference;
    - ``js``: Jensen-Shannon distance (natural log) of the raw proportions;
    - ``ks`` / ``wasserstein`` (numeric only): max |CDF difference| and the area between
      the CDFs on bin centres, over present values (the missing bin excluded);
    - ``threshold``: ``psi_threshold(n, m, K - 1, alpha)``; pass
      ``quantiles = chi2_quantiles(layout.df, alpha)`` to skip recomputing them.
    """
    win = np.asarray(counts, dtype=np.float64)
    q = chi2_quantiles(layout.df, alpha) if quantiles is None else quantiles
    out = np.empty((8, layout.n_features))  # one row per statistic: contiguous columns
    _stats(win, layout.ref_counts, layout.ref_n, q, layout.offset, layout.n_value,
           layout.kinds, layout.edges, layout.edge_start, PSEUDO_COUNT, out.T)
    psi, js, ks, wasserstein, missing, ref_missing, n, threshold = out
    return WindowStats(psi=psi, threshold=threshold, js=js, ks=ks, wasserstein=wasserstein,
                       missing_rate=missing, reference_missing_rate=ref_missing, n=n)
