"""Drift window statistics: PSI, Jensen-Shannon, binned KS, Wasserstein and missing
rates of a window's flat bin counts (``stream.drift.stats``' layout) against the
reference, with calibrated PSI thresholds; one compiled call per window.

Calibration. PSI is the symmetric (Jeffreys) divergence ``sum (a - e) ln(a / e)`` of the
window proportions ``a`` and the reference proportions ``e``. Its second-order expansion
is ``sum (a - e)^2 / e``; under no drift both samples come from the same multinomial, the
differences are asymptotically normal with covariance ``(1/n + 1/m)(diag p - p p^T)``,
so ``PSI ~ (1/n + 1/m) chi2(K - 1)`` with ``K`` the reference's non-empty bins. The
threshold for false-alarm rate ``alpha`` is ``(1/n + 1/m) chi2.ppf(1 - alpha, K - 1)``.
Proportions are smoothed with 0.5 pseudo-counts on the bins that are non-empty on either
side (so a bin empty in one sample gives a large but finite PSI, and bins empty on both
sides contribute nothing); the approximation is checked empirically in the tests.

That rate is ``alpha`` on average over references. Against the one reference a model
has, each feature's rate depends on how far its reference landed from the population,
and on sparse bins: ``stream.drift.calibration`` bounds the window size a reference
supports and gives the monitor bootstrap quantiles for sparse features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from scipy.stats import chi2

from features import jitcache
from stream.drift.stats import BinLayout

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = [
    "PSEUDO_COUNT",
    "WindowStats",
    "chi2_quantiles",
    "psi_level",
    "psi_threshold",
    "window_stats",
]

PSEUDO_COUNT = 0.5

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


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

    @classmethod
    def from_table(cls, table: FloatArray) -> WindowStats:
        """From the kernels' 8 x features table (rows: psi, js, ks, wasserstein, missing
        rate, reference missing rate, n, threshold)."""
        psi, js, ks, wasserstein, missing, ref_missing, n, threshold = table
        return cls(psi=psi, threshold=threshold, js=js, ks=ks, wasserstein=wasserstein,
                   missing_rate=missing, reference_missing_rate=ref_missing, n=n)


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
    return WindowStats.from_table(out)
