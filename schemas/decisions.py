"""The decision record: one per good input event, the audit trail of the engine.

A decision carries enough to explain itself later (EU AI Act Art. 12 style): which
model (name, version, sha256) produced which score, which decision the policy made and
why (reason codes, hard rule, fallback), how fresh the features were, whether the path
was degraded and why, how long each stage took, and where the input came from.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "DECISION_SCHEMA_VERSION",
    "DEGRADED_REASONS",
    "OUTCOMES",
    "Decision",
    "Reason",
    "StageLatencies",
]

DECISION_SCHEMA_VERSION = 1

# Fraud outcomes, then the pricing outcome (a price was set).
OUTCOMES = ("approve", "review", "decline", "price")

# Why a decision was made on the degraded path (fallback rules, not the model alone).
DEGRADED_REASONS = (
    "features_missing",  # no online row for an entity of the event
    "features_stale",  # online row older than its view's TTL
    "online_store_down",  # Redis unreachable / timed out: every feature NaN
    "over_budget",  # the event was already older than the latency budget
    "model_error",  # the scorer raised; decided by rules alone
)


class Reason(msgspec.Struct, frozen=True, array_like=False):
    """One reason code: a feature, its value and its contribution to the raw score."""

    feature: str
    value: float | None
    contribution: float


class StageLatencies(msgspec.Struct, frozen=True, omit_defaults=True):
    """Milliseconds spent in each stage on this event's batch (shared by the batch)."""

    decode: float = 0.0
    features: float = 0.0
    score: float = 0.0
    policy: float = 0.0
    encode: float = 0.0


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What the engine decided for one input event, and why."""

    event_id: str
    pipeline: str
    key: str
    outcome: Literal["approve", "review", "decline", "price"]
    score: float | None
    model_name: str
    model_version: str
    model_sha256: str
    price: float | None = None
    rule: str | None = None
    reasons: list[Reason] = []
    # True when an adverse model decision was not explained (per-batch explanation cap).
    reasons_skipped: bool = False
    degraded: bool = False
    degraded_reasons: list[str] = []
    missing_features: int = 0
    feature_age_s: dict[str, float | None] = {}
    latency_ms: StageLatencies = StageLatencies()
    e2e_ms: float = 0.0
    event_time: float = 0.0
    decided_at: float = 0.0
    worker_id: str = ""
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    challenger_version: str | None = None
    challenger_score: float | None = None
    schema_version: int = DECISION_SCHEMA_VERSION
