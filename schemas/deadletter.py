"""The dead-letter record: one per rejected input message, nothing dropped silently.

It keeps the original bytes (base64 in JSON, exactly as received), where they came
from (topic/partition/offset/key), a stable error code for dashboards and alerts, and
msgspec's human-readable message naming the offending field.

Whatever the input's size, the record fits the dead-letter topic: a payload longer
than ``DEADLETTER_PAYLOAD_CAP`` bytes keeps only its first ``DEADLETTER_PAYLOAD_CAP``
bytes, with ``payload_truncated`` set; ``payload_size`` and ``payload_sha256`` always
describe the whole original payload, so it can be matched with the producer's copy.
(Base64 makes the kept bytes 4/3 larger: 256 KiB of payload is ~342 KiB of record,
well inside Kafka's default 1 MB message limit.) Error texts are capped likewise.

A topic with a smaller limit may still refuse a record: an output record the broker
refuses for its content (a dead letter or a decision) is replaced by one with the code
``output_rejected``, an empty ``payload`` (``payload_truncated`` set), the refused
record's ``payload_size`` and ``payload_sha256``, the broker's error in ``error`` and
the input it answers in ``topic``/``partition``/``offset`` (``stream.kafka.rejects``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "DEADLETTER_ERROR_CAP",
    "DEADLETTER_PAYLOAD_CAP",
    "DEADLETTER_SCHEMA_VERSION",
    "ERROR_CODES",
    "DeadLetter",
    "ErrorCode",
]

DEADLETTER_SCHEMA_VERSION = 1
DEADLETTER_PAYLOAD_CAP = 256 * 1024
DEADLETTER_ERROR_CAP = 2048

ErrorCode = Literal[
    "not_json",
    "wrong_type",
    "missing_field",
    "out_of_range",
    "invalid_value",
    "oversize",
    "unknown_schema_version",
    "empty",
    "too_deep",
    "duplicate_key",
    # Schema-Registry-framed input (schemas.wireformat). A registry outage is no code:
    # it is retried, never dead-lettered.
    "bad_framing",
    "unknown_schema_id",
    "unsupported_schema",
    "undecodable",
    # An output record the broker refused for its content (stream.kafka.rejects): this
    # dead letter replaces it, without its payload (its size and sha256 are kept).
    "output_rejected",
    # Decoded, but refused before scoring: an event dated beyond now + the pipeline's
    # allowed clock skew; a currency missing from the pipeline's rate table.
    "event_time_skew",
    "unknown_currency",
]
ERROR_CODES: tuple[str, ...] = ErrorCode.__args__  # type: ignore[attr-defined]


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A message the worker could not accept as an event, with the reason."""

    pipeline: str
    error_code: ErrorCode
    error: str
    payload: bytes
    payload_size: int
    topic: str = ""
    partition: int = -1
    offset: int = -1
    key: bytes | None = None
    failed_at: float = 0.0
    worker_id: str = ""
    schema_version: int = DEADLETTER_SCHEMA_VERSION
    payload_sha256: str = ""
    payload_truncated: bool = False
