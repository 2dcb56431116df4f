"""Score bands, hard rules and fallbacks (the fraud example's); sweep choice and clamps."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from stream.config import BandsPolicy
from stream.config import SweepPolicy as _Sweep
from stream.core.policy import (
    OUTCOMES,
    PRICE_RULES,
    band_rules,
    choose_price,
    clamp_price,
    decide_bands,
)

POLICY = msgspec.convert({
    "review_above": 0.4, "decline_above": 0.8,
    "rules": [{"name": "blocked_country", "field": "country", "in": ["KP"],
               "outcome": "decline"},
              {"name": "amount_over_limit", "field": "amount", "above": 1000.0}],
    "fallback": {"name": "fallback_amount", "field": "amount", "above": 100.0},
}, BandsPolicy)
FRAUD_RULES = band_rules(POLICY)


def decide_fraud(policy, score, amount, blocked, degraded):
    """The example's rules as the generic policy sees them: one mask per rule."""
    return decide_bands(policy, score, [blocked, amount > policy.rules[1].above], amount,
                        degraded)


def PricingPolicy(**kw):
    return _Sweep(base_field="base", candidate_field="candidate", **kw)


def names(decisions):
    return ([OUTCOMES[i] for i in decisions.outcome],
            [FRAUD_RULES[i] for i in decisions.rule])


def test_a_rule_needs_exactly_one_of_in_and_above():
    with pytest.raises(msgspec.ValidationError, match="exactly one"):
        msgspec.convert({"rules": [{"name": "r", "field": "f"}]}, BandsPolicy)
    with pytest.raises(msgspec.ValidationError, match="exactly one"):
        msgspec.convert({"rules": [{"name": "r", "field": "f", "in": ["a"], "above": 1}]},
                        BandsPolicy)


def test_without_a_fallback_rule_degraded_events_keep_the_models_band():
    policy = BandsPolicy(review_above=0.4, decline_above=0.8)
    got = decide_bands(policy, np.array([0.5, np.nan]), [], None, np.ones(2, bool))
    assert got.outcome.tolist() == [1, 0] and got.rule.tolist() == [0, 0]


def test_score_bands_with_edges_inclusive():
    score = np.array([0.1, 0.4, 0.79, 0.8, 0.99])
    n = len(score)
    out, rules = names(decide_fraud(POLICY, score, np.full(n, 10.0), np.zeros(n, bool),
                                    np.zeros(n, bool)))
    assert out == ["approve", "review", "review", "decline", "decline"]
    assert rules == [""] * n


def test_hard_rules_come_first():
    score = np.array([0.0, 0.0, 0.95])
    amount = np.array([5.0, 5000.0, 5000.0])
    blocked = np.array([True, False, False])
    out, rules = names(decide_fraud(POLICY, score, amount, blocked, np.zeros(3, bool)))
    assert out == ["decline", "review", "decline"]
    assert rules == ["blocked_country", "amount_over_limit", "amount_over_limit"]


def test_fallback_uses_amount_rule_and_never_loosens_the_model():
    score = np.array([np.nan, np.nan, 0.1, 0.9])
    amount = np.array([50.0, 500.0, 500.0, 5.0])
    degraded = np.ones(4, bool)
    out, rules = names(decide_fraud(POLICY, score, amount, np.zeros(4, bool), degraded))
    assert out == ["approve", "review", "review", "decline"]
    assert rules == ["fallback_amount"] * 4


def test_pricing_picks_revenue_max_and_clamps():
    policy = PricingPolicy(candidates=[0.8, 1.0, 1.2], floor_ratio=0.7, ceiling_ratio=1.3,
                           max_step_ratio=0.1)
    base = np.array([10.0, 10.0, 10.0])
    demand = np.array([
        [0.9, 0.85, 0.2],   # revenue 7.2, 8.5, 2.4 -> 1.0x = 10.00
        [0.9, 0.1, 0.05],   # -> 0.8x = 8.00, clamped by max step to 9.00
        [np.nan, np.nan, np.nan],  # no model output -> base price, fallback
    ])
    got = choose_price(policy, base, demand, np.array([False, False, False]))
    assert got.price.tolist() == [10.0, 9.0, 10.0]
    assert [PRICE_RULES[i] for i in got.rule] == ["", "clamped", "fallback_base_price"]
    assert got.demand[0] == 0.85 and np.isnan(got.demand[2])
    degraded = choose_price(policy, base, demand, np.array([True, True, True]))
    assert [PRICE_RULES[i] for i in degraded.rule] == ["fallback_base_price"] * 3


def test_clamp_price_respects_floor_and_ceiling():
    policy = PricingPolicy(candidates=[1.0], floor_ratio=0.9, ceiling_ratio=1.05,
                           max_step_ratio=0.5)
    got = clamp_price(policy, np.array([100.0, 100.0, 100.0]), np.array([10.0, 99.0, 500.0]))
    assert got.tolist() == [90.0, 99.0, 105.0]


def _one_event(score, amount, blocked, degraded):
    """The module docstring's order, one event at a time (the reference)."""
    band = 2 if score >= POLICY.decline_above else 1 if score >= POLICY.review_above else 0
    if blocked:
        return 2, 1
    outcome, rule = band, 0
    if degraded:
        fallback = 1 if amount > POLICY.fallback.above else 0
        outcome, rule = max(fallback, band if np.isfinite(score) else 0), 3
    if amount > POLICY.rules[1].above:
        outcome, rule = max(outcome, 1), 2
    return outcome, rule


def test_batches_with_and_without_each_rule_match_the_one_event_reference():
    rng = np.random.default_rng(11)
    for trial in range(60):
        n = int(rng.integers(1, 40))
        score = rng.random(n)
        score[rng.random(n) < 0.2] = np.nan
        amount = rng.choice([5.0, 150.0, 999.0, 1000.0, 1500.0], n)
        # Some batches have no event at all under a rule (the skipped steps).
        blocked = rng.random(n) < (0.2 if trial % 3 == 0 else 0.0)
        degraded = rng.random(n) < (0.3 if trial % 2 == 0 else 0.0)
        if trial % 5 == 0:
            amount = np.minimum(amount, 999.0)
        got = decide_fraud(POLICY, score, amount, blocked, degraded)
        want = [_one_event(*args) for args in zip(score, amount, blocked, degraded,
                                                  strict=True)]
        assert list(zip(got.outcome.tolist(), got.rule.tolist(), strict=True)) == want
        assert got.outcome.dtype == np.int8 and got.rule.dtype == np.int8
