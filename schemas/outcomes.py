"""Wire types of the outcome topics: what happened to a decided event, and the online
metrics of each model version on the outcomes joined back so far.

``Outcome`` is what an outcome source (chargebacks, conversions) writes, keyed by anything:
the decided event's id, its binary label (1 = the positive class the model scores, e.g.
fraud) or a realised value, and when the outcome became known (Unix seconds).

``OutcomeMetricsRecord`` is one model version's window of joined (score, label) pairs,
published periodically by ``streamscore outcomes``. Metrics that are undefined for the
window (AUC with one class only, delays of an empty window) are ``null``.
"""

from __future__ import annotations

import math

import msgspec

__all__ = [
    "OUTCOME_SCHEMA_VERSION",
    "JoinCountsRecord",
    "Outcome",
    "OutcomeMetricsRecord",
    "decode_metrics",
    "decode_outcome",
    "encode_metrics",
    "finite_or_none",
]

OUTCOME_SCHEMA_VERSION = 1


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The known outcome of one decided event."""

    event_id: str
    label: int | None = None  # 0 or 1 (binary models)
    value: float | None = None  # a realised value (e.g. revenue), when there is no label
    outcome_time: float


class JoinCountsRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What became of the outcomes read so far, and of the sampled decisions."""

    joined: int = 0
    late: int = 0
    duplicate: int = 0
    unmatched: int = 0
    invalid: int = 0
    pending: int = 0
    evicted: int = 0


class OutcomeMetricsRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Online metrics of one model version over its window of joined outcomes."""

    schema_version: int = OUTCOME_SCHEMA_VERSION
    pipeline: str
    model_version: str
    role: str  # "champion" or "challenger": how the decisions named this version
    at: float  # when the metrics were computed (Unix seconds)
    n: int
    positives: int
    auc: float | None
    thresholds: list[float]
    precision: list[float]
    recall: list[float]
    brier: float | None
    reliability_counts: list[int]
    reliability_true: list[float]
    reliability_pred: list[float]
    delay_mean: float | None
    delay_p50: float | None
    delay_p90: float | None
    delay_max: float | None
    counts: JoinCountsRecord = JoinCountsRecord()


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, or ``None`` when it is NaN or infinite (JSON has neither)."""
    x = float(x)
    return x if math.isfinite(x) else None


_encoder = msgspec.json.Encoder()
_outcome_decoder = msgspec.json.Decoder(Outcome)
_metrics_decoder = msgspec.json.Decoder(OutcomeMetricsRecord)


def decode_outcome(data: bytes | str) -> Outcome:
    """An outcome from JSON (``msgspec.ValidationError`` / ``DecodeError`` if malformed)."""
    return _outcome_decoder.decode(data)


def encode_metrics(record: OutcomeMetricsRecord) -> bytes:
    """JSON bytes of a metrics record."""
    return _encoder.encode(record)


def decode_metrics(data: bytes | str) -> OutcomeMetricsRecord:
    """A metrics record from JSON."""
    return _metrics_decoder.decode(data)
