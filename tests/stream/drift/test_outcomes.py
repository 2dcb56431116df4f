"""Outcome join and online metrics: equal to scikit-learn on the same joined pairs, per
model version; late, duplicate and unknown outcomes counted; memory bounded."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

from stream.drift.outcomes import MetricWindow, OutcomeConfig, OutcomeJoiner, sampled

THRESHOLDS = (0.2, 0.5, 0.8)


def assert_equals_sklearn(m, s, y, delays):
    assert m.n == s.size and m.positives == int(y.sum())
    assert m.auc == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    for t, p, r in zip(m.thresholds, m.precision, m.recall, strict=True):
        pred = (s >= t).astype(int)
        assert p == pytest.approx(precision_score(y, pred, zero_division=0), abs=1e-9)
        assert r == pytest.approx(recall_score(y, pred, zero_division=0), abs=1e-9)
    assert m.brier == pytest.approx(brier_score_loss(y, s), abs=1e-9)
    true, pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(m.reliability_true, true, rtol=0, atol=1e-9)
    np.testing.assert_allclose(m.reliability_pred, pred, rtol=0, atol=1e-9)
    assert sum(m.reliability_counts) == s.size
    assert m.delay_mean == pytest.approx(delays.mean(), abs=1e-9)
    assert m.delay_p50 == pytest.approx(np.median(delays), abs=1e-9)
    assert m.delay_max == pytest.approx(delays.max(), abs=1e-9)


@pytest.mark.parametrize("ties", [False, True])
def test_window_metrics_equal_sklearn(ties):
    rng = np.random.default_rng(1)
    w = MetricWindow(3000)
    s_all = rng.beta(2, 5, 8000)
    if ties:
        s_all = np.round(s_all, 2)  # many tied scores, some exactly on the thresholds
    y_all = (rng.random(8000) < s_all).astype(float)
    d_all = rng.exponential(3600.0, 8000)
    for lo in range(0, 8000, 700):  # batches that wrap the ring
        w.add(s_all[lo:lo + 700], y_all[lo:lo + 700], d_all[lo:lo + 700])
    assert len(w) == 3000
    m = w.metrics(THRESHOLDS, 10)
    assert_equals_sklearn(m, s_all[-3000:], y_all[-3000:], d_all[-3000:])


def test_one_class_window_has_no_auc_and_zero_precision():
    w = MetricWindow(10)
    w.add([0.1, 0.2], [0, 0], [1, 2])
    m = w.metrics((0.5,), 10)
    assert np.isnan(m.auc) and m.precision == (0.0,) and m.recall == (0.0,)


def test_joined_outcomes_per_model_version_equal_sklearn():
    rng = np.random.default_rng(2)
    n = 6000
    ids = [f"ev-{i}" for i in range(n)]
    t = np.arange(n, dtype=float)
    truth = rng.random(n)
    y = (rng.random(n) < truth).astype(float)
    champion = np.clip(truth + rng.normal(0, 0.3, n), 0, 1)  # noisier
    challenger = np.clip(truth + rng.normal(0, 0.1, n), 0, 1)
    cfg = OutcomeConfig(horizon_seconds=10_000, window=4000, thresholds=THRESHOLDS)
    j = OutcomeJoiner(cfg)
    for lo in range(0, n, 500):
        j.add_decisions(ids[lo:lo + 500], t[lo:lo + 500],
                        {"v1": champion[lo:lo + 500], "v2": challenger[lo:lo + 500]})
    delay = rng.exponential(2000.0, n)
    late = delay > cfg.horizon_seconds
    order = rng.permutation(n)  # outcomes arrive in another order than decisions
    j.add_outcomes([ids[i] for i in order], y[order], (t + delay)[order])
    j.add_outcomes(["ev-1", "ev-2", "nope"], [1, 0, 1], [1e4, 1e4, 1e4])
    assert j.counts.late == int(late.sum()) > 0
    assert j.counts.joined == n - int(late.sum())
    assert j.counts.duplicate == int((~late[[1, 2]]).sum())
    assert j.counts.unmatched == 1 + int(late[[1, 2]].sum())
    assert j.pending == 0
    kept = order[~late[order]][-4000:]  # the window: the last 4000 joined, in join order
    metrics = j.metrics()
    assert set(metrics) == {"v1", "v2"}
    assert_equals_sklearn(metrics["v1"], champion[kept], y[kept], delay[kept])
    assert_equals_sklearn(metrics["v2"], challenger[kept], y[kept], delay[kept])
    assert metrics["v2"].auc > metrics["v1"].auc + 0.05
    assert metrics["v2"].brier < metrics["v1"].brier


def test_pending_decisions_are_bounded_evicted_oldest_first_and_expire():
    j = OutcomeJoiner(OutcomeConfig(max_pending=1000, horizon_seconds=100.0, window=50))
    ids = [f"e{i}" for i in range(5000)]
    j.add_decisions(ids, np.full(5000, 10.0), {"v1": np.full(5000, 0.5)})
    assert j.pending == 1000 and j.evicted == 4000
    j.add_outcomes(["e0", "e4999"], [1, 0], [20.0, 20.0])
    assert j.counts.unmatched == 1 and j.counts.joined == 1
    # Decisions older than the horizon expire when newer ones arrive.
    j.add_decisions(["late-1"], [500.0], {"v1": [0.5]})
    assert j.pending == 1
    j.add_outcomes(["e4998"], [1], [501.0])
    assert j.counts.unmatched == 2
    # Duplicates are told apart only while remembered (a bounded set).
    small = OutcomeJoiner(OutcomeConfig(max_joined_ids=2))
    small.add_decisions(["a", "b", "c"], [0, 0, 0], {"v": [0.1, 0.2, 0.3]})
    small.add_outcomes(["a", "b", "c", "c", "a"], [0, 1, 0, 0, 0], [1, 1, 1, 1, 1])
    assert (small.counts.duplicate, small.counts.unmatched) == (1, 1)


def test_sampling_is_deterministic_by_event_id():
    ids = [f"id-{i}" for i in range(20_000)]
    j = OutcomeJoiner(OutcomeConfig(sample_rate=0.25))
    j.add_decisions(ids, np.zeros(20_000), {"v1": np.zeros(20_000)})
    assert 0.23 < j.pending / 20_000 < 0.27
    assert j.pending == sum(sampled(i, 0.25) for i in ids)


def test_bad_input_is_a_clear_error():
    j = OutcomeJoiner(OutcomeConfig())
    with pytest.raises(ValueError, match="0 or 1"):
        j.add_outcomes(["a"], [2], [0])
    with pytest.raises(ValueError, match="length"):
        j.add_decisions(["a", "b"], [0], {"v": [0.1, 0.2]})
    with pytest.raises(ValueError, match="versions"):
        j.add_decisions(["a"], [0], {"a": [0], "b": [0], "c": [0]})
    with pytest.raises(ValueError, match="sample_rate"):
        OutcomeJoiner(OutcomeConfig(sample_rate=0))
