"""Champion vs challenger on the same joined outcomes: AUC difference with DeLong's
confidence interval, Brier difference with a paired normal interval, and a verdict.

Both models scored the same events (the challenger in shadow), so the comparison is
paired: DeLong, DeLong & Clarke-Pearson (1988) estimate the covariance of two correlated
AUCs from each model's structural components (for a positive, the share of negatives it
outranks; for a negative, the share of positives that outrank it), computed here with
midranks as in Sun & Xu (2014), O(n log n). ``Var(AUC_a - AUC_b) = c' (S10/m + S01/n) c``
with ``c = (1, -1)``, m positives and n negatives; the interval is normal. The Brier
difference is the mean of per-event squared-error differences, with its standard error.

The verdict: the challenger is better when the AUC difference's interval lies above 0,
worse when below, otherwise no evidence either way (keep the champion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

__all__ = ["Comparison", "compare_models", "delong"]


@dataclass(frozen=True)
class Comparison:
    """Champion (a) vs challenger (b) on ``n`` paired events."""

    champion: str
    challenger: str
    n: int
    positives: int
    auc_a: float
    auc_b: float
    auc_diff: float  # b - a
    auc_diff_low: float
    auc_diff_high: float
    auc_p: float  # two-sided, H0: equal AUC
    brier_a: float
    brier_b: float
    brier_diff: float  # b - a (negative: the challenger is better calibrated/sharper)
    brier_diff_low: float
    brier_diff_high: float
    confidence: float
    verdict: str  # "challenger", "champion" or "undecided"


def _components(scores: Any, pos: Any) -> tuple[float, Any, Any]:
    """AUC and the structural components (per positive, per negative) of one model."""
    s = np.asarray(scores, dtype=np.float64)
    x, y = s[pos], s[~pos]
    m, n = x.size, y.size
    tz = rankdata(np.concatenate([x, y]))
    tx, ty = rankdata(x), rankdata(y)
    v10 = (tz[:m] - tx) / n  # share of negatives each positive outranks (ties 1/2)
    v01 = 1.0 - (tz[m:] - ty) / m  # share of positives that outrank each negative
    auc = float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
    return auc, v10, v01


def delong(labels: Any, scores_a: Any, scores_b: Any) -> tuple[float, float, float]:
    """``(auc_a, auc_b, variance of auc_b - auc_a)`` for paired scores of the same events."""
    pos = np.asarray(labels) == 1
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        raise ValueError("DeLong needs at least two positives and two negatives")
    auc_a, a10, a01 = _components(scores_a, pos)
    auc_b, b10, b01 = _components(scores_b, pos)
    s10 = np.cov(np.vstack([a10, b10]))
    s01 = np.cov(np.vstack([a01, b01]))
    c = np.array([-1.0, 1.0])
    var = float(c @ (s10 / m + s01 / n) @ c)
    return auc_a, auc_b, max(var, 0.0)


def compare_models(labels: Any, scores_a: Any, scores_b: Any, champion: str = "champion",
                   challenger: str = "challenger", confidence: float = 0.95) -> Comparison:
    """Compare two models' scores of the same events against their 0/1 outcomes."""
    y = np.asarray(labels, dtype=np.float64)
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if not y.size == a.size == b.size:
        raise ValueError("labels and both models' scores differ in length")
    z = float(norm.ppf(0.5 + confidence / 2.0))
    auc_a, auc_b, var = delong(y, a, b)
    diff, sd = auc_b - auc_a, math.sqrt(var)
    p = float(2.0 * norm.sf(abs(diff) / sd)) if sd > 0 else float(diff == 0.0)
    d = (b - y) ** 2 - (a - y) ** 2
    bd, bse = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
    low, high = diff - z * sd, diff + z * sd
    verdict = "challenger" if low > 0 else "champion" if high < 0 else "undecided"
    return Comparison(
        champion=champion, challenger=challenger, n=int(y.size),
        positives=int((y == 1).sum()), auc_a=auc_a, auc_b=auc_b, auc_diff=diff,
        auc_diff_low=low, auc_diff_high=high, auc_p=p, brier_a=float(np.mean((a - y) ** 2)),
        brier_b=float(np.mean((b - y) ** 2)), brier_diff=bd, brier_diff_low=bd - z * bse,
        brier_diff_high=bd + z * bse, confidence=confidence, verdict=verdict)
