"""Output records the broker refuses for what they contain: replaced, counted, never a stop.

A record can be refused for its content: larger than the topic's ``max.message.bytes``
or the producer's ``message.max.bytes`` (synchronously, from ``produce()``, or in the
delivery report), or invalid for the topic. Re-delivering its input would be refused
the same way on every restart: a crash loop that commits nothing. So the refused record
is replaced by a minimal dead letter on the dead-letter topic, without the payload: the
code ``output_rejected``, the broker's error, the refused record's topic, size and
sha256, and the input it answers (topic, partition, offset, read from the record when it
names them). The dead letter has a bounded size whatever the input: if the broker
refuses that too, the dead-letter topic itself is misconfigured and the worker stops
with one line saying so (nothing a restart could change).

Other delivery errors (timeouts, a broker away, authorization) are not content: the
batch stays uncommitted and the worker stops as before, its input re-read after the
restart.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import msgspec
from confluent_kafka import KafkaError

from schemas.deadletter import DEADLETTER_ERROR_CAP, DeadLetter

__all__ = ["CONTENT_ERRORS", "Refused", "Replacer", "is_content_error"]

# Errors about the record itself: the same record is refused again on every retry.
CONTENT_ERRORS = frozenset({
    # the broker's max.message.bytes (topic or broker), and the producer's
    # message.max.bytes when produce() refuses a record at once
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,  # e.g. a compacted topic and a record without a key
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG,  # CORRUPT_MESSAGE
    KafkaError.POLICY_VIOLATION,
})

# (topic, key, value, error) of one refused record.
Refused = tuple[str, "bytes | None", bytes, KafkaError]

_encode = msgspec.json.Encoder().encode


class _Source(msgspec.Struct):
    """Where a refused output's input came from, if the record says (decisions and dead
    letters both do; other records leave the defaults)."""

    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    topic: str = ""
    partition: int = -1
    offset: int = -1


_source = msgspec.json.Decoder(_Source).decode


def is_content_error(err: KafkaError) -> bool:
    """Whether the broker (or the producer) refused a record for what it contains."""
    return err.code() in CONTENT_ERRORS


class Replacer:
    """Builds the minimal dead letter that replaces a refused record, and counts it."""

    def __init__(self, pipeline: str, dead_letter_topic: str, worker_id: str, *,
                 on_refused: Callable[[str, str], None] | None = None) -> None:
        self.pipeline, self.topic, self.worker_id = pipeline, dead_letter_topic, worker_id
        self._on_refused = on_refused  # (refused record's topic, error name): a metric
        self.replaced = 0

    def __call__(self, refused: Refused) -> tuple[str, bytes | None, bytes] | None:
        """(topic, key, value) of the replacement, or None when ``refused`` is no
        content error (the batch must then stay uncommitted)."""
        topic, key, value, err = refused
        if not is_content_error(err):
            return None
        if self._on_refused is not None:
            self._on_refused(topic, err.name())
        self.replaced += 1
        try:
            src = _source(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            src = _Source()
        record = DeadLetter(
            pipeline=self.pipeline, error_code="output_rejected",
            error=f"the broker refused a {len(value)}-byte record for {topic}: "
                  f"{err.str()}"[:DEADLETTER_ERROR_CAP],
            payload=b"", payload_size=len(value),
            payload_sha256=hashlib.sha256(value).hexdigest(), payload_truncated=True,
            topic=src.source_topic or src.topic,
            partition=src.source_partition if src.source_topic else src.partition,
            offset=src.source_offset if src.source_topic else src.offset,
            key=key[:256] if key is not None else None,
            failed_at=time.time(), worker_id=self.worker_id,
        )
        return self.topic, key[:256] if key is not None else None, _encode(record)
