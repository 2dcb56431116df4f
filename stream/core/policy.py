"""Score -> decision, for a whole batch at once: score bands with hard rules, or a sweep.

Everything here is vectorized numpy over the batch; nothing knows about Kafka or a
domain: which fields the rules read is the pipeline file's (``stream.config``).

Bands (``BandsPolicy``), in this order:
1. degraded events (features missing/stale, online store down, over budget, model
   error) are decided by the fallback rule: its outcome when its field is above its
   limit, else approve; a finite model score can only make that stricter, never more
   lenient (a fallback must not approve what the model declines);
2. everything else by the score bands: ``>= decline_above`` declines, ``>=
   review_above`` reviews, else approve;
3. hard rules, listed by priority: every matching rule raises the outcome to at least
   its own, and the first matching one names the decision (``rule``).

Sweep (``SweepPolicy``): the model predicts demand for a candidate price; each configured
multiplier of the base price is scored, the expected-revenue maximiser is chosen, then
clamped to ``[floor_ratio, ceiling_ratio] x base`` and to ``max_step_ratio`` away from
the base. The degraded fallback is the base price itself (clamped), flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stream.config import BandsPolicy, SweepPolicy

__all__ = [
    "OUTCOMES",
    "PRICE_RULES",
    "BandDecisions",
    "BandRules",
    "PriceDecisions",
    "band_rules",
    "choose_price",
    "clamp_price",
    "decide_bands",
    "policy_fields",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

OUTCOMES = ("approve", "review", "decline")
APPROVE, REVIEW, DECLINE = 0, 1, 2
_LEVEL = {name: i for i, name in enumerate(OUTCOMES)}
# Sweep rules, index 0 = the model's revenue maximiser as it was.
PRICE_RULES = ("", "clamped", "fallback_base_price")
PRICE_CLAMPED, PRICE_FALLBACK = 1, 2


@dataclass(frozen=True, slots=True)
class BandDecisions:
    """Per event: outcome index into OUTCOMES and rule index into ``band_rules(policy)``."""

    outcome: npt.NDArray[np.int8]
    rule: npt.NDArray[np.int8]


@dataclass(frozen=True, slots=True)
class PriceDecisions:
    """Per event: the price set, the predicted demand at it, rule index into PRICE_RULES."""

    price: FloatArray
    demand: FloatArray
    rule: npt.NDArray[np.int8]


def band_rules(policy: BandsPolicy) -> tuple[str, ...]:
    """The rule names a decision can carry: index 0 none, then each rule, then the
    fallback's."""
    fallback = (policy.fallback.name,) if policy.fallback is not None else ()
    return ("", *(r.name for r in policy.rules), *fallback)


def _bands(policy: BandsPolicy, score: FloatArray) -> npt.NDArray[np.int8]:
    out = np.zeros(score.shape[0], dtype=np.int8)
    # NaN compares False: a missing score stays "approve" here; callers mark it degraded.
    out[score >= policy.review_above] = REVIEW
    out[score >= policy.decline_above] = DECLINE
    return out


def decide_bands(
    policy: BandsPolicy,
    score: FloatArray,
    matches: Sequence[BoolArray],
    fallback_value: FloatArray | None,
    degraded: BoolArray,
) -> BandDecisions:
    """Outcomes and rules for a batch (see the module docstring for the order).

    ``matches[i]`` says which events ``policy.rules[i]`` matches; ``fallback_value`` is
    the fallback rule's field (None without a fallback rule).
    """
    outcome = _bands(policy, score)
    rule = np.zeros(score.shape[0], dtype=np.int8)
    # Each step is skipped when no event of the batch needs it (the common small batch:
    # nothing degraded and no rule matching); the outcome is the same either way.
    fb = policy.fallback
    if degraded.any():
        level = _LEVEL[fb.outcome] if fb is not None else APPROVE
        if fb is not None and fallback_value is not None:
            fallback = np.where(fallback_value > fb.above, level, APPROVE).astype(np.int8)
        else:
            fallback = np.zeros(score.shape[0], dtype=np.int8)
        # The model's band where a score exists (stricter wins), the rule alone where not.
        fallback = np.maximum(fallback, np.where(np.isfinite(score), outcome, APPROVE)
                              ).astype(np.int8)
        outcome = np.where(degraded, fallback, outcome).astype(np.int8)
        if fb is not None:
            rule[degraded] = len(policy.rules) + 1
    # Lowest priority first, so the first matching rule's name is the one kept.
    for i in range(len(policy.rules) - 1, -1, -1):
        hit = matches[i]
        if hit.any():
            outcome[hit] = np.maximum(outcome[hit], _LEVEL[policy.rules[i].outcome])
            rule[hit] = i + 1
    return BandDecisions(outcome, rule)


def policy_fields(policy: BandsPolicy | SweepPolicy) -> list[tuple[str, str]]:
    """(where in the policy, field name) of every event or feature field it reads."""
    if isinstance(policy, SweepPolicy):
        return [("base_field", policy.base_field)]
    fields = [(f"rules[{i}].field", r.field) for i, r in enumerate(policy.rules)]
    if policy.fallback is not None:
        fields.append(("fallback.field", policy.fallback.field))
    return fields


class BandRules:
    """A bands policy's rules, planned once: each ``in`` rule's value set."""

    def __init__(self, policy: BandsPolicy) -> None:
        self._sets = [frozenset(r.in_) for r in policy.rules]

    def decide(self, policy: BandsPolicy, score: FloatArray, field: Callable[[str], Any],
               degraded: BoolArray) -> BandDecisions:
        """``decide_bands`` with each rule's field read through ``field(name)``."""
        n = score.shape[0]
        matches = []
        for rule, allowed in zip(policy.rules, self._sets, strict=True):
            col = field(rule.field)
            if rule.above is not None:
                matches.append(np.asarray(col, dtype=np.float64) > rule.above)
            else:  # a set lookup per event, C-level (np.isin sorts object columns)
                matches.append(np.fromiter(map(allowed.__contains__, col), dtype=bool,
                                           count=n))
        fb = policy.fallback
        return decide_bands(policy, score, matches,
                            field(fb.field) if fb is not None else None, degraded)


def clamp_price(policy: SweepPolicy, base: FloatArray, price: FloatArray) -> FloatArray:
    """Clamp prices to the floor/ceiling around the base and to the max step from it."""
    low = base * max(policy.floor_ratio, 1.0 - policy.max_step_ratio)
    high = base * min(policy.ceiling_ratio, 1.0 + policy.max_step_ratio)
    return np.asarray(np.round(np.clip(price, low, high), 2), dtype=np.float64)


def choose_price(
    policy: SweepPolicy,
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
