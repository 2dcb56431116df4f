"""Per-feature calibration of the drift alarms against one fixed reference: how large a
window a reference of ``m`` rows supports, and a vectorised simulator of the long-run
false-alarm rate of every feature.

Why a fixed reference is not calibrated by the pooled threshold. ``stream.drift.window``
alarms when PSI exceeds ``(1/n + 1/m) chi2.ppf(1 - alpha, k)`` (``n`` window events,
``m`` reference rows, ``k`` = non-empty bins - 1). That is the null distribution of PSI
when *both* samples are random: averaged over references, the rate is ``alpha``. A model
has one reference, and its bin proportions ``e`` are an estimate of the population's
``p``. Conditional on the reference, a stationary window's proportions scatter around
``p``, not ``e``: ``n PSI`` is approximately non-central chi-square with ``k`` degrees of
freedom and non-centrality ``lambda = n sum (e - p)^2 / p``, and since
``m sum (e - p)^2 / p ~ chi2(k)``, ``lambda ~ (n / m) chi2(k)``: a random quantity fixed
once the reference is drawn. A feature whose reference happened to land far from ``p``
alarms too often forever, one that landed close too rarely. The spread depends on the
ratio ``rho = n / m`` only (the variation of ``lambda`` is ``sqrt(2k) rho`` against the
statistic's own ``sqrt(2k)``): for ``alpha`` = 0.01 and the central 99% of references,
``rho`` = 0.25 (5,000-event windows on a 20,000-row holdout) gives conditional rates from
0.2% to 4.6% (``k`` = 10), ``rho`` = 0.04 gives 0.8% to 1.5%.

No threshold computed from the reference can fix this: the reference is all the monitor
knows about ``p``, and given it ``sum (e - p)^2 / p`` is still ``chi2(k) / m``. The two-sample
chi-square or G-test (the reference counts as a second sample) is the same test to first
order (its exact form conditions on the pooled counts, which again averages over
references), and a bootstrap of the reference resamples around ``e`` and so estimates
the unconditional null, not the conditional one. What does bound the spread is the ratio:
a reference built from enough rows (``scorers.refstats.reference_stats(...,
extra_rows=...)`` counts the training rows into the feature histograms; the holdout
alone is usually too few), or windows no larger than the reference supports.
:func:`max_window_events` is that limit, :func:`min_reference_rows` its inverse; the
monitor warns when its windows exceed it. The band is the rate at the ``(1 - coverage)/2``
and ``(1 + coverage)/2`` quantiles of ``lambda`` (``ncx2.sf``), so with ``coverage`` = 0.99
one feature in a hundred may land just outside ``[alpha / 2, 2 alpha]``.

Apart from the reference, the chi-square limit itself fails for bins the window expects
few events in (a rare category, the tail values of a count): :func:`window_quantiles`
replaces its quantile for such features by a seeded parametric bootstrap at the
monitor's window size, computed when the monitor starts (it depends on the window, so it
is not stored with the reference, whose format is unchanged).

:func:`simulate_alarm_rates` measures rather than predicts: stationary windows are
multinomial draws of a feature's bin counts from its population's bin probabilities
(exactly the distribution of the binned counts of ``n`` independent events), scored with
the same smoothed PSI and threshold as the compiled kernel, all features and windows in
a few numpy operations.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2, ncx2

from stream.drift.stats import BinLayout
from stream.drift.window import PSEUDO_COUNT, chi2_quantiles

__all__ = [
    "BAND",
    "BOOTSTRAP_DRAWS",
    "COVERAGE",
    "SPARSE_EXPECTED",
    "conditional_rate_band",
    "max_ratio",
    "max_window_events",
    "min_reference_rows",
    "simulate_alarm_rates",
    "window_psi",
    "window_quantiles",
]

# Long-run false-alarm rate of every feature within [BAND[0] alpha, BAND[1] alpha]...
BAND = (0.5, 2.0)
# ...for this share of the references a feature can draw.
COVERAGE = 0.99
# Fewest expected window events in every bin for the chi-square quantile; features with
# sparser bins get a bootstrap quantile of this many draws.
SPARSE_EXPECTED = 5.0
BOOTSTRAP_DRAWS = 20_000

FloatArray = npt.NDArray[np.float64]


def conditional_rate_band(df: int, ratio: float, alpha: float,
                          coverage: float = COVERAGE) -> tuple[float, float]:
    """Conditional false-alarm rates (low, high) of a feature with ``df`` = k degrees of
    freedom at ``ratio`` = window events / reference rows, for references at the
    ``(1 -+ coverage) / 2`` quantiles of their sampling error."""
    if df <= 0:
        return 0.0, 0.0  # one bin: nothing can differ by sampling alone
    q = float(chi2.ppf(1.0 - alpha, df))
    tail = (1.0 - coverage) / 2.0
    lam = ratio * chi2.ppf([tail, 1.0 - tail], df)
    lo, hi = ncx2.sf((1.0 + ratio) * q, df, lam) if ratio > 0 else (alpha, alpha)
    return float(lo), float(hi)


@functools.lru_cache(maxsize=256)
def max_ratio(df: int, alpha: float, coverage: float = COVERAGE,
              band: tuple[float, float] = BAND) -> float:
    """Largest window / reference ratio whose conditional rates stay within
    ``band`` x ``alpha`` (bisection to 1e-6 of the bracket; the band widens
    monotonically with the ratio). Cached: every monitor of a process asks the same."""
    if df <= 0:
        return np.inf

    def inside(r: float) -> bool:
        lo, hi = conditional_rate_band(df, r, alpha, coverage)
        return lo >= band[0] * alpha and hi <= band[1] * alpha

    good, bad = 0.0, 1.0
    while inside(bad) and bad < 1e6:
        good, bad = bad, bad * 2.0
    for _ in range(20):
        mid = (good + bad) / 2.0
        good, bad = (mid, bad) if inside(mid) else (good, mid)
    return good


def max_window_events(reference_rows: Any, df: Any, alpha: float,
                      coverage: float = COVERAGE) -> npt.NDArray[np.int64]:
    """Per feature, the largest window (events) its reference supports at ``alpha``."""
    m = np.asarray(reference_rows, dtype=np.float64)
    d = np.asarray(df, dtype=np.int64)
    ratios = {int(k): max_ratio(int(k), alpha, coverage) for k in np.unique(d)}
    r = np.array([ratios[int(k)] for k in d.ravel()]).reshape(d.shape)
    big = np.iinfo(np.int64).max
    return np.where(np.isfinite(r), np.minimum(np.floor(r * m), big), big).astype(np.int64)


def min_reference_rows(window_events: int, df: int, alpha: float,
                       coverage: float = COVERAGE) -> int:
    """Reference rows a feature with ``df`` needs for windows of ``window_events``."""
    r = max_ratio(df, alpha, coverage)
    return 0 if not np.isfinite(r) else int(np.ceil(window_events / r))


def window_psi(win: Any, ref: Any) -> FloatArray:
    """PSI of window counts (windows x bins) against reference counts (bins, or one row
    per window) of one feature's block, with the compiled kernel's smoothing:
    ``PSEUDO_COUNT`` on the bins non-empty on either side, nothing from bins empty on
    both."""
    w = np.asarray(win, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    active = (w > 0) | (r > 0)
    k = active.sum(axis=1, keepdims=True)
    a = (w + PSEUDO_COUNT) / (w.sum(axis=1, keepdims=True) + PSEUDO_COUNT * k)
    e = (r + PSEUDO_COUNT) / (r.sum(axis=-1, keepdims=True) + PSEUDO_COUNT * k)
    return np.asarray(np.where(active, (a - e) * np.log(a / e), 0.0).sum(axis=1))


def window_quantiles(layout: BinLayout, window: int, alpha: float, *,
                     draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> FloatArray:
    """Per feature, the ``q`` of the threshold ``(1/n + 1/m) q`` for windows of
    ``window`` events: ``chi2.ppf(1 - alpha, k)``, or for a feature with sparse bins the
    parametric bootstrap of its two-sample null.

    The chi-square limit needs every bin's expected window count to be large. A bin the
    window expects fewer than ``SPARSE_EXPECTED`` events in adds much less than one
    degree of freedom to the smoothed PSI (an empty window bin against a rare reference
    bin contributes ~0.1), so such features alarm too rarely (measured: a 30-level Zipf
    categorical at 200-event windows, 0.5% at alpha = 0.01). For them, ``draws`` pairs of
    a reference of ``m`` rows and a window of ``n`` events are drawn from the reference's
    own proportions, and ``q`` is the ``1 - alpha`` quantile of their PSI over
    ``1/n + 1/m``. Seeded, so a monitor's thresholds are the same on every start. Windows
    closed early (by time, or while the first window fills) hold fewer events, and their
    sparse bins are sparser: their rate is at most the target's.
    """
    quant = chi2_quantiles(layout.df, alpha)
    if window <= 0:
        return quant
    rng = np.random.default_rng(seed)
    for f in range(layout.n_features):
        lo, hi = int(layout.offset[f]), int(layout.offset[f + 1])
        ref = layout.ref_counts[lo:hi]
        m = float(ref.sum())
        seen = ref[ref > 0]
        if layout.df[f] == 0 or m <= 0 or window * seen.min() / m >= SPARSE_EXPECTED:
            continue
        e = ref / m
        refs = rng.multinomial(int(m), e, size=draws)
        wins = rng.multinomial(window, e, size=draws)
        psi = window_psi(wins, refs)
        quant[f] = float(np.quantile(psi, 1.0 - alpha)) / (1.0 / window + 1.0 / m)
    return quant


def simulate_alarm_rates(layout: BinLayout, probs: Any, window: int, windows: int,
                         alpha: float, rng: np.random.Generator,
                         quantiles: FloatArray | None = None) -> FloatArray:
    """Long-run false-alarm rate per feature of ``layout``: the share of ``windows``
    stationary windows of ``window`` events whose PSI exceeds the monitor's threshold
    (``quantiles``: the monitor's, :func:`window_quantiles`, unless given).

    ``probs`` are the population's probabilities of the layout's flat bins (each
    feature's block sums to 1): the events the reference was drawn from.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (layout.total_bins,):
        raise ValueError(f"{p.shape[0]} bin probabilities for {layout.total_bins} bins")
    quant = window_quantiles(layout, window, alpha) if quantiles is None else quantiles
    rates = np.empty(layout.n_features)
    for f in range(layout.n_features):
        lo, hi = int(layout.offset[f]), int(layout.offset[f + 1])
        block = p[lo:hi] / p[lo:hi].sum()
        counts = rng.multinomial(window, block, size=windows)
        psi = window_psi(counts, layout.ref_counts[lo:hi])
        threshold = (1.0 / window + 1.0 / layout.ref_n[f]) * quant[f]
        rates[f] = float(np.mean(psi > threshold))
    return rates
