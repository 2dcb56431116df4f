"""Name -> wire type of every topic, one decoder per type, and batch decode/validate.

Decoders and encoders are created once at import (msgspec's advice: reuse them).
``decode_batch`` is the only per-event Python work on the hot path: it decodes each
payload with the prebuilt typed decoder and sorts failures into stable error codes
(``schemas.deadletter.ERROR_CODES``) so the dead-letter topic can be counted by reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from schemas.deadletter import DeadLetter
from schemas.decisions import Decision
from schemas.errors import ConfigError
from schemas.events import FraudTransaction, PricingRequest

__all__ = [
    "DECODERS",
    "SCHEMAS",
    "DecodedBatch",
    "Rejection",
    "classify_error",
    "decode_batch",
    "decoder_for",
    "encoder",
    "schema_type",
]

SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "fraud_transaction": FraudTransaction,
    "pricing_request": PricingRequest,
    "decision": Decision,
    "dead_letter": DeadLetter,
}

try:  # the drift record is owned by the drift monitor's engineer; register it when present
    from schemas.drift import DriftRecord

    SCHEMAS["drift_record"] = DriftRecord
except ImportError:  # pragma: no cover - depends on the tree's state
    pass

DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(struct) for name, struct in SCHEMAS.items()
}
encoder = msgspec.json.Encoder()


def schema_type(name: str) -> type[msgspec.Struct]:
    """The Struct registered under ``name``; a ``ConfigError`` lists the known names."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ConfigError(
            f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}"
        ) from None


def decoder_for(name: str) -> msgspec.json.Decoder[Any]:
    """The single shared JSON decoder of schema ``name``."""
    schema_type(name)
    return DECODERS[name]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one payload of a batch was rejected."""

    index: int
    code: str
    message: str


@dataclass(slots=True)
class DecodedBatch:
    """The events that decoded (with their batch indices) and the rejections."""

    events: list[Any] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


_AT_VERSION = "at `$.schema_version`"
_RANGE = re.compile(r"Expected `[^`]+` (?:of length )?[<>]=?|Number out of range|length")


def classify_error(exc: Exception) -> str:
    """The stable error code of a msgspec decode/validation error."""
    if not isinstance(exc, msgspec.ValidationError):
        return "not_json"
    text = str(exc)
    if _AT_VERSION in text:
        return "unknown_schema_version"
    if "missing required field" in text:
        return "missing_field"
    if _RANGE.search(text):
        return "out_of_range"
    if "matching regex" in text or "Invalid enum value" in text:
        return "invalid_value"
    if text.startswith("Expected `"):
        return "wrong_type"
    return "invalid_value"


def decode_batch(
    name: str, payloads: Sequence[bytes | None], *, max_bytes: int = 64 * 1024
) -> DecodedBatch:
    """Decode and validate every payload; never raises for bad input."""
    decode = decoder_for(name).decode
    out = DecodedBatch()
    events, indices, rejected = out.events, out.indices, out.rejected
    for i, payload in enumerate(payloads):
        if not payload:
            rejected.append(Rejection(i, "empty", "empty or missing message value"))
            continue
        if len(payload) > max_bytes:
            rejected.append(
                Rejection(i, "oversize", f"payload of {len(payload)} bytes > limit {max_bytes}")
            )
            continue
        try:
            events.append(decode(payload))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            rejected.append(Rejection(i, classify_error(exc), str(exc)))
            continue
        indices.append(i)
    return out
