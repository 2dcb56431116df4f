"""Hostile payloads: whatever one event contains, its worst outcome is one rejection.

Each case here once escaped decoding (a crash loop of the consumer group) or passed
validation with a value that bypassed a rule.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.deadletter import ERROR_CODES
from schemas.registry import decode_batch

GOOD = {
    "event_id": "e1", "card_id": 42, "merchant_id": "m7", "amount": 12.5,
    "currency": "EUR", "country": "DE", "channel": "ecom", "mcc": 5411,
    "event_time": 1_795_000_000.0,
}
GOOD_BYTES = json.dumps(GOOD).encode()


def _with_extra(raw: str) -> bytes:
    return (json.dumps(GOOD)[:-1] + ', "extra": ' + raw + "}").encode()


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("depth", [200, 1_000, 20_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_one_rejection_not_an_exception(depth, opener, fast):
    closer = "]" if opener == "[" else "}"
    deep = _with_extra(opener * depth + "1" + closer * depth)
    batch = decode_batch("fraud_transaction", [GOOD_BYTES, deep, GOOD_BYTES], fast=fast,
                         max_bytes=1 << 20)
    if depth >= 1_000:
        assert batch.indices == [0, 2]
        assert [(r.index, r.code) for r in batch.rejected] == [(1, "too_deep")]
    else:  # shallow enough for the decoder: an ignored extra field, accepted
        assert batch.indices == [0, 1, 2] and batch.rejected == []


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(
    ("field", "value"),
    [("currency", "USD\n"), ("country", "KP\n"), ("currency", " USD"), ("country", "KP ")],
)
def test_stray_whitespace_never_passes_a_code_pattern(field, value, fast):
    payload = json.dumps({**GOOD, field: value}).encode()
    batch = decode_batch("fraud_transaction", [payload], fast=fast)
    assert batch.events == []
    assert [r.code for r in batch.rejected] == ["invalid_value"]


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("field", ["amount", "country", "card_id", "schema_version"])
def test_a_duplicate_key_is_rejected_not_last_one_wins(field, fast):
    text = json.dumps({**GOOD, "schema_version": 1})
    dup = text[:-1] + f', "{field}": ' + json.dumps({**GOOD, "schema_version": 1}[field]) + "}"
    batch = decode_batch("fraud_transaction", [GOOD_BYTES, dup.encode()], fast=fast)
    assert batch.indices == [0]
    assert [(r.index, r.code) for r in batch.rejected] == [(1, "duplicate_key")]
    assert field in batch.rejected[0].message


def test_a_field_name_inside_a_value_is_not_a_duplicate():
    # '"amount"' appears as a string value and inside an escaped string: still one key.
    doc = {**GOOD, "merchant_id": "amount", "note": 'x"amount"y'}
    batch = decode_batch("fraud_transaction", [json.dumps(doc).encode()])
    assert batch.rejected == [] and batch.indices == [0]


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                               max_size=4),
    max_leaves=30,
), st.booleans())
def test_any_extra_json_value_yields_an_event_or_one_coded_rejection(extra, fast):
    payload = _with_extra(json.dumps(extra))
    batch = decode_batch("fraud_transaction", [payload], fast=fast)
    assert len(batch.events) + len(batch.rejected) == 1
    assert all(r.code in ERROR_CODES for r in batch.rejected)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_yield_an_event_or_one_coded_rejection(raw, fast):
    batch = decode_batch("fraud_transaction", [raw, GOOD_BYTES], fast=fast)
    assert len(batch.events) + len(batch.rejected) == 2
    assert batch.indices[-1] == 1
    assert all(r.code in ERROR_CODES for r in batch.rejected)
