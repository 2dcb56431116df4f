"""Score -> decision, for a whole batch at once: fraud bands and hard rules, pricing clamps.

Everything here is vectorized numpy over the batch; nothing knows about Kafka.

Fraud, in this order (first match wins):
1. hard rules: a blocked country declines; an amount over ``max_amount`` is reviewed
   (``rule`` names which);
2. degraded events (features missing/stale, online store down, over budget, model
   error) are decided by the fallback rule: review above
   ``fallback_review_above_amount``, else approve; a finite model score can only make
   that stricter, never more lenient (a fallback must not approve what the model
   declines);
3. everything else by the score bands: ``>= decline_above`` declines, ``>=
   review_above`` reviews, else approve.

Pricing: the model predicts demand for a candidate price; each configured multiplier of
the base price is scored, the expected-revenue maximiser is chosen, then clamped to
``[floor_ratio, ceiling_ratio] x base`` and to ``max_step_ratio`` away from the base.
The degraded fallback is the base price itself (clamped), flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream.config import FraudPolicy, PricingPolicy

__all__ = [
    "FRAUD_OUTCOMES",
    "FRAUD_RULES",
    "PRICE_RULES",
    "FraudDecisions",
    "PriceDecisions",
    "choose_price",
    "clamp_price",
    "decide_fraud",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

FRAUD_OUTCOMES = ("approve", "review", "decline")
APPROVE, REVIEW, DECLINE = 0, 1, 2
# Index 0 = decided by the model's score bands (no rule).
FRAUD_RULES = ("", "blocked_country", "amount_over_limit", "fallback_amount")
NO_RULE, RULE_BLOCKED, RULE_AMOUNT, RULE_FALLBACK = 0, 1, 2, 3
# Pricing rules, index 0 = the model's revenue maximiser as it was.
PRICE_RULES = ("", "clamped", "fallback_base_price")
PRICE_CLAMPED, PRICE_FALLBACK = 1, 2


@dataclass(frozen=True, slots=True)
class FraudDecisions:
    """Per event: outcome index into FRAUD_OUTCOMES and rule index into FRAUD_RULES."""

    outcome: npt.NDArray[np.int8]
    rule: npt.NDArray[np.int8]


@dataclass(frozen=True, slots=True)
class PriceDecisions:
    """Per event: the price set, the predicted demand at it, rule index into PRICE_RULES."""

    price: FloatArray
    demand: FloatArray
    rule: npt.NDArray[np.int8]


def _bands(policy: FraudPolicy, score: FloatArray) -> npt.NDArray[np.int8]:
    out = np.zeros(score.shape[0], dtype=np.int8)
    # NaN compares False: a missing score stays "approve" here; callers mark it degraded.
    out[score >= policy.review_above] = REVIEW
    out[score >= policy.decline_above] = DECLINE
    return out


def decide_fraud(
    policy: FraudPolicy,
    score: FloatArray,
    amount: FloatArray,
    blocked: BoolArray,
    degraded: BoolArray,
) -> FraudDecisions:
    """Outcomes and rules for a batch (see the module docstring for the order)."""
    outcome = _bands(policy, score)
    rule = np.zeros(score.shape[0], dtype=np.int8)
    # Each step is skipped when no event of the batch needs it (the common small batch:
    # nothing degraded, over the limit or blocked); the outcome is the same either way.
    if degraded.any():
        fallback = np.where(amount > policy.fallback_review_above_amount, REVIEW,
                            APPROVE).astype(np.int8)
        # The model's band where a score exists (stricter wins), the rule alone where not.
        fallback = np.maximum(fallback, np.where(np.isfinite(score), outcome, APPROVE)
                              ).astype(np.int8)
        outcome = np.where(degraded, fallback, outcome).astype(np.int8)
        rule[degraded] = RULE_FALLBACK

    over = amount > policy.max_amount
    if over.any():
        outcome[over] = np.maximum(outcome[over], REVIEW)
        rule[over] = RULE_AMOUNT
    if blocked.any():
        outcome[blocked] = DECLINE
        rule[blocked] = RULE_BLOCKED
    return FraudDecisions(outcome, rule)


def clamp_price(policy: PricingPolicy, base: FloatArray, price: FloatArray) -> FloatArray:
    """Clamp prices to the floor/ceiling around the base and to the max step from it."""
    low = base * max(policy.floor_ratio, 1.0 - policy.max_step_ratio)
    high = base * min(policy.ceiling_ratio, 1.0 + policy.max_step_ratio)
    return np.asarray(np.round(np.clip(price, low, high), 2), dtype=np.float64)


def choose_price(
    policy: PricingPolicy,
    base: FloatArray,
    demand: FloatArray,
    degraded: BoolArray,
) -> PriceDecisions:
    """Pick the revenue-maximising candidate per event and clamp it.

    ``demand`` is rows x candidates: the model's prediction with the candidate price
    ``base * policy.candidates[j]``. Rows without a finite demand anywhere, and degraded
    rows, get the (clamped) base price and the rule ``fallback_base_price``.
    """
    mult = np.asarray(policy.candidates, dtype=np.float64)
    prices = base[:, None] * mult[None, :]
    revenue = np.where(np.isfinite(demand), prices * demand, -np.inf)
    best = np.argmax(revenue, axis=1)
    rows = np.arange(base.shape[0])
    chosen = prices[rows, best]
    chosen_demand = demand[rows, best]
    no_model = ~np.isfinite(revenue).any(axis=1)
    fallback = degraded | no_model
    chosen = np.where(fallback, base, chosen)
    clamped = clamp_price(policy, base, chosen)
    rule = np.where(fallback, PRICE_FALLBACK,
                    np.where(np.abs(clamped - chosen) > 0.005, PRICE_CLAMPED, 0)).astype(np.int8)
    demand_at = np.where(fallback, np.nan, chosen_demand)
    return PriceDecisions(clamped, demand_at, rule)
