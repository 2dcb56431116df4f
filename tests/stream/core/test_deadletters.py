"""Dead-letter records fit the dead-letter topic whatever the input's size."""

from __future__ import annotations

import hashlib
import json

import pytest

from schemas.deadletter import DEADLETTER_PAYLOAD_CAP
from schemas.registry import Rejection, decode_batch
from stream.core.deadletters import dead_letter_record

KAFKA_DEFAULT_MAX_MESSAGE = 1_048_588


def _record(payload: bytes, code: str = "oversize", message: str = "too big") -> dict:
    _key, value = dead_letter_record(
        Rejection(0, code, message), [payload], [b"k" * 10], [("in", 3, 77)],
        pipeline="p", worker_id="w", failed_at=1.0,
    )
    assert len(value) < KAFKA_DEFAULT_MAX_MESSAGE
    return json.loads(value)


@pytest.mark.parametrize("size", [760_000, 5_000_000])
def test_a_huge_payload_yields_a_record_under_the_broker_limit(size):
    payload = b'{"k": "' + b"x" * (size - 10) + b'"}'
    doc = _record(payload, message="m" * 100_000)
    assert doc["payload_truncated"] is True
    assert doc["payload_size"] == len(payload)
    assert doc["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert len(doc["error"]) < 10_000


def test_a_small_payload_is_kept_whole():
    payload = b'{"not": "an event"}'
    doc = _record(payload)
    assert doc.get("payload_truncated", False) is False  # omitted when False
    assert doc["payload_sha256"] == hashlib.sha256(payload).hexdigest()


def test_an_object_with_50000_keys_is_one_rejection_and_one_fitting_record():
    payload = json.dumps({f"k{i}": i for i in range(50_000)}).encode()
    batch = decode_batch("fraud_transaction", [payload])
    assert batch.events == [] and len(batch.rejected) == 1
    rej = batch.rejected[0]
    assert rej.code == "oversize"
    _key, value = dead_letter_record(rej, [payload], None, None, pipeline="p",
                                     worker_id="w", failed_at=1.0)
    assert len(value) < KAFKA_DEFAULT_MAX_MESSAGE
    assert len(payload) > DEADLETTER_PAYLOAD_CAP
