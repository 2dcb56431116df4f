"""Input validation error codes, record round trips and JSON Schema files in sync."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.deadletter import ERROR_CODES, DeadLetter
from schemas.decisions import Decision, Reason, StageLatencies
from schemas.events import FraudTransaction, PricingRequest
from schemas.generate import JSONSCHEMA_DIR, render_all
from schemas.registry import BUILTIN_SCHEMAS, decode_batch, decoder_for, schema_type

GOOD = {
    "event_id": "e1", "card_id": 42, "merchant_id": "m7", "amount": 12.5,
    "currency": "EUR", "country": "DE", "channel": "ecom", "mcc": 5411,
    "event_time": 1_795_000_000.0,
}


def enc(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def with_(**changes) -> bytes:
    doc = {**GOOD, **changes}
    return enc({k: v for k, v in doc.items() if v is not ...})


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe\x00", "not_json"),
        (b"[1, 2]", "wrong_type"),
        (b"", "empty"),
        (None, "empty"),
        (with_(card_id="42"), "wrong_type"),
        (with_(amount=...), "missing_field"),
        (with_(amount=-1), "out_of_range"),
        (with_(mcc=10_000), "out_of_range"),
        (with_(event_id=""), "out_of_range"),
        (with_(event_time=1_795_000_000_000.0), "out_of_range"),
        (with_(channel="teleport"), "invalid_value"),
        (with_(currency="euro"), "invalid_value"),
        (with_(schema_version=2), "unknown_schema_version"),
        (with_(merchant_id="x" * 70_000), "oversize"),
    ],
)
def test_bad_fraud_payloads_get_their_error_code(payload, code):
    batch = decode_batch("fraud_transaction", [payload])
    assert batch.events == []
    assert [r.code for r in batch.rejected] == [code]
    assert code in ERROR_CODES
    assert batch.rejected[0].message


def test_good_and_bad_keep_their_batch_positions():
    payloads = [enc(GOOD), b"nope", with_(event_id="e3", extra_field=1), with_(amount="x")]
    batch = decode_batch("fraud_transaction", payloads)
    assert batch.indices == [0, 2]
    assert [e.event_id for e in batch.events] == ["e1", "e3"]
    assert [(r.index, r.code) for r in batch.rejected] == [(1, "not_json"), (3, "wrong_type")]
    assert isinstance(batch.events[0], FraudTransaction)
    assert batch.events[0].schema_version == 1


def test_pricing_request_decodes_and_rejects_zero_price():
    doc = {"event_id": "p1", "sku_id": 3, "store_id": "s1", "base_price": 10.0,
           "candidate_price": 11.0, "event_time": 1_795_000_000.0}
    ok = decode_batch("pricing_request", [enc(doc), enc({**doc, "base_price": 0})])
    assert isinstance(ok.events[0], PricingRequest)
    assert [r.code for r in ok.rejected] == ["out_of_range"]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_and_are_accounted_for(payload):
    batch = decode_batch("fraud_transaction", [payload, enc(GOOD)])
    assert len(batch.events) + len(batch.rejected) == 2
    assert batch.indices[-1] == 1


def test_decision_and_dead_letter_round_trip():
    d = Decision(
        event_id="e1", pipeline="fraud", key="42", outcome="review", score=0.5,
        model_name="fraud", model_version="3", model_sha256="ab" * 32,
        reasons=[Reason("amount", 900.0, 1.2)], degraded=True,
        degraded_reasons=["features_missing"], latency_ms=StageLatencies(decode=0.1),
    )
    assert decoder_for("decision").decode(msgspec.json.encode(d)) == d
    raw = b"\x00\xffbinary"
    dl = DeadLetter(pipeline="fraud", error_code="not_json", error="bad", payload=raw,
                    payload_size=len(raw), topic="t", partition=1, offset=7)
    wire = msgspec.json.encode(dl)
    assert json.loads(wire)["payload"] == "AP9iaW5hcnk="  # base64 of the original bytes
    assert decoder_for("dead_letter").decode(wire).payload == raw


def test_unknown_schema_name_is_a_clear_error():
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="known: "):
        schema_type("fraud_transactions")


def test_jsonschema_files_are_in_sync_with_the_structs():
    rendered = render_all()
    assert set(rendered) == {f"{n}.json" for n in BUILTIN_SCHEMAS}
    for fname, text in rendered.items():
        path = JSONSCHEMA_DIR / fname
        assert path.exists(), f"run python -m schemas.generate ({fname} missing)"
        assert path.read_text() == text, f"run python -m schemas.generate ({fname} stale)"


def test_jsonschema_states_the_constraints():
    doc = json.loads((JSONSCHEMA_DIR / "fraud_transaction.json").read_text())
    props = doc["$defs"]["FraudTransaction"]["properties"]
    assert props["mcc"]["maximum"] == 9999
    assert sorted(props["channel"]["enum"]) == ["atm", "ecom", "moto", "pos"]
    assert "amount" in doc["$defs"]["FraudTransaction"]["required"]


# ---- the fast decode (pattern-free twin + per-distinct-value pattern check) -----------

FAST_CASES = [
    enc(GOOD), with_(currency="euro"), with_(currency="EUR\n"), with_(country="de"),
    with_(country=7), with_(amount=-1, currency="x"),
    enc({"currency": "x", **{k: v for k, v in GOOD.items() if k != "currency"}, "amount": -1}),
    with_(currency="usd", country="zz"), with_(currency=...), b"", None, b"{",
    with_(event_id="e9", currency="GBP", country="FR"), with_(schema_version=2),
    with_(channel="teleport", currency="eur"), with_(merchant_id="x" * 70_000),
]


def _outcome(batch):
    return (batch.indices, [msgspec.structs.asdict(e) for e in batch.events],
            [(r.index, r.code, r.message) for r in batch.rejected])


def test_fast_decode_accepts_and_rejects_exactly_like_the_strict_one():
    strict = decode_batch("fraud_transaction", FAST_CASES)
    fast = decode_batch("fraud_transaction", FAST_CASES, fast=True)
    assert _outcome(fast) == _outcome(strict)
    assert len(strict.rejected) >= 10  # the cases do exercise the rejections
    # A pattern failure named by the strict decoder's own message (an earlier field's
    # error still wins where the strict decoder stops there first).
    by_index = {r.index: r for r in fast.rejected}
    assert by_index[1].code == "invalid_value" and "$.currency" in by_index[1].message
    assert by_index[5].code == "out_of_range" and "$.amount" in by_index[5].message
    assert by_index[6].code == "invalid_value" and "$.currency" in by_index[6].message


def test_fast_decode_runs_past_bad_payloads_without_missing_or_none():
    # No None and nothing oversize: the run decoder (extend over map) takes the batch.
    cases = [p for p in FAST_CASES if p is not None and len(p) < 64 * 1024] * 3
    strict = decode_batch("fraud_transaction", cases)
    for fast in (False, True):
        assert _outcome(decode_batch("fraud_transaction", cases, fast=fast)) == _outcome(strict)
    assert strict.indices[-1] == len(cases) - 3  # the last good payload ...
    assert [r.index for r in strict.rejected][-1] == len(cases) - 1  # ... then bad ones


@given(st.lists(st.sampled_from(["USD", "usd", "EUR", "E", "EURO", "GB\n", "", "ÜSD"]),
                min_size=1, max_size=8),
       st.lists(st.sampled_from(["DE", "de", "D", "DEU", "FR"]), min_size=1, max_size=8))
def test_fast_decode_matches_strict_on_drawn_pattern_values(currencies, countries):
    payloads = [with_(event_id=f"e{i}", currency=c, country=countries[i % len(countries)])
                for i, c in enumerate(currencies)]
    assert _outcome(decode_batch("fraud_transaction", payloads, fast=True)) == _outcome(
        decode_batch("fraud_transaction", payloads))


def test_fast_twin_is_the_schema_minus_its_patterns():
    from schemas.registry import _TWINS

    twin = _TWINS["fraud_transaction"]
    assert twin is not None
    assert [name for name, _ in twin.patterns] == ["currency", "country"]
    event = decode_batch("fraud_transaction", [enc(GOOD)], fast=True).events[0]
    strict = msgspec.json.schema(FraudTransaction)["$defs"]["FraudTransaction"]
    lax = msgspec.json.schema(type(event))["$defs"][type(event).__name__]
    for prop in strict["properties"].values():
        prop.pop("pattern", None)
    assert lax["properties"] == strict["properties"]
    assert lax["required"] == strict["required"]
    # Types without a pattern keep the strict decoder.
    assert _TWINS["pricing_request"] is None
