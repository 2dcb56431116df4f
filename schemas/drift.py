"""Wire type of the drift topic: one ``DriftRecord`` per closed monitoring window.

A record says which pipeline and model it watches, which events it covers (window start
and end as Unix seconds, ``n`` events), and for every model feature and for the score the
drift statistics against the model's training reference, the calibrated PSI threshold and
whether it alarmed. Statistics that are not defined for a feature (KS and Wasserstein of
a categorical feature, or of a window without present values) are ``null``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "DRIFT_SCHEMA_VERSION",
    "DecisionMix",
    "DriftRecord",
    "FeatureDrift",
    "decode_drift",
    "drift_json_schema",
    "encode_drift",
]

DRIFT_SCHEMA_VERSION = 1


class FeatureDrift(msgspec.Struct, frozen=True, kw_only=True):
    """Drift of one feature (or of the score) in one window."""

    name: str
    kind: Literal["numeric", "categorical", "score"]
    psi: float
    # PSI above which the window alarms at the record's false_alarm_rate (0 when the
    # reference has a single bin: then any change at all is drift).
    threshold: float
    alarm: bool
    # The conventional, uncalibrated reading of PSI: < 0.1, < 0.25, above.
    level: Literal["stable", "moderate", "significant"]
    js: float
    ks: float | None = None
    wasserstein: float | None = None
    missing_rate: float
    reference_missing_rate: float
    bins: int


class DecisionMix(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy decided in the window: counts and shares per outcome (fraud), and
    the mean price multiplier (pricing)."""

    counts: dict[str, int] = {}
    shares: dict[str, float] = {}
    mean_multiplier: float | None = None


class DriftRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One closed window of the drift monitor (key on the topic: the pipeline name)."""

    schema_version: int = DRIFT_SCHEMA_VERSION
    pipeline: str
    model_name: str
    model_version: str
    model_sha256: str
    window_start: float
    window_end: float
    # What closed the window's last sub-window: its event count, its time span, or a
    # flush at shutdown.
    closed_by: Literal["count", "time", "flush"]
    n: int
    reference_n: int
    false_alarm_rate: float
    features: list[FeatureDrift]
    score: FeatureDrift
    decisions: DecisionMix = DecisionMix()
    page_hinkley_alarms: int = 0
    # Names of alarming features, "score" and "page_hinkley" when they fired.
    alarms: list[str] = []


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DriftRecord)


def encode_drift(record: DriftRecord) -> bytes:
    """JSON bytes of a record."""
    return _encoder.encode(record)


def decode_drift(data: bytes | str) -> DriftRecord:
    """A record from JSON (``msgspec.ValidationError`` / ``DecodeError`` if malformed)."""
    return _decoder.decode(data)


def drift_json_schema() -> dict[str, object]:
    """JSON Schema of the drift topic's records."""
    return msgspec.json.schema(DriftRecord)
