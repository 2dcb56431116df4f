"""Champion vs challenger statistics: DeLong's AUCs equal scikit-learn's, its variance of
the AUC difference agrees with a paired bootstrap, and the better model is picked on a
synthetic stream where the challenger is known to be better (and no winner is declared
between two equally good models)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from stream.drift.compare import compare_models, delong


def _stream(n: int, champion_noise: float, challenger_noise: float, seed: int = 0):
    """Labels from a latent risk; each model sees the risk through its own noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.5 * z - 3.0)))).astype(float)

    def model(noise: float) -> np.ndarray:
        return 1 / (1 + np.exp(-(2.5 * (z + noise * rng.normal(size=n)) - 3.0)))

    return y, model(champion_noise), model(challenger_noise)


def test_delong_matches_sklearn_and_the_bootstrap():
    y, a, b = _stream(4000, 0.8, 0.5)
    a = np.round(a, 2)  # ties: midranks must count them one half
    auc_a, auc_b, var = delong(y, a, b)
    assert auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert auc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    rng = np.random.default_rng(1)
    diffs = []
    for _ in range(400):
        i = rng.integers(0, y.size, y.size)
        diffs.append(roc_auc_score(y[i], b[i]) - roc_auc_score(y[i], a[i]))
    assert np.sqrt(var) == pytest.approx(np.std(diffs), rel=0.15)


def test_picks_the_better_challenger():
    y, a, b = _stream(20_000, 0.9, 0.4, seed=2)
    r = compare_models(y, a, b, "3", "4")
    assert r.verdict == "challenger" and r.auc_diff_low > 0 and r.auc_p < 1e-6
    assert r.brier_diff < 0 and r.brier_diff_high < 0
    flipped = compare_models(y, b, a, "4", "3")
    assert flipped.verdict == "champion" and flipped.auc_diff_high < 0


def test_equal_models_are_undecided_at_about_the_nominal_rate():
    wins = sum(compare_models(*_stream(3000, 0.6, 0.6, seed=s)).verdict != "undecided"
               for s in range(60))
    assert wins <= 9  # 5% nominal of 60: P(binomial(60, 0.05) > 9) < 0.2%


def test_needs_both_classes():
    with pytest.raises(ValueError, match="two positives"):
        compare_models([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])
