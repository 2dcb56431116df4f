"""Declared events: a field list, a JSON Schema or an Avro schema gives a validating Struct."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ConfigError
from schemas.events import FraudTransaction
from schemas.eventspec import EventDecl, FieldDecl, build_struct, from_avro, from_json_schema
from schemas.registry import decode_batch, register_schema

FRAUD_DECL = EventDecl(
    key="card_id", time="event_time",
    fields={
        "event_id": FieldDecl(type="string", min_length=1, max_length=128),
        "card_id": FieldDecl(type="integer", min=0, max=2**63 - 1),
        "merchant_id": FieldDecl(type="string", min_length=1, max_length=64),
        "amount": FieldDecl(type="number", min=0, max=1e9),
        "currency": FieldDecl(type="string", pattern="^[A-Z]{3}$"),
        "country": FieldDecl(type="string", pattern="^[A-Z]{2}$"),
        "channel": FieldDecl(type="string", enum=["pos", "ecom", "atm", "moto"]),
        "mcc": FieldDecl(type="integer", min=0, max=9999),
        "event_time": FieldDecl(type="timestamp"),
        "schema_version": FieldDecl(type="integer", enum=[1], required=False, default=1),
    },
)
GOOD = {"event_id": "e1", "card_id": 42, "merchant_id": "m7", "amount": 12.5,
        "currency": "EUR", "country": "DE", "channel": "ecom", "mcc": 5411,
        "event_time": 1_795_000_000.0}


@pytest.fixture(scope="module")
def declared() -> str:
    register_schema("declared_fraud", build_struct("declared fraud", FRAUD_DECL))
    register_schema("json_schema_fraud", build_struct(
        "json schema fraud",
        from_json_schema(msgspec.json.schema(FraudTransaction)["$defs"]["FraudTransaction"],
                         key="card_id", time="event_time")))
    return "declared_fraud"


values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**5),
                   st.floats(allow_nan=False), st.text(max_size=5),
                   st.sampled_from(["USD", "KP", "KP\n", "pos", "", "ecom"]))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([*sorted(GOOD), "schema_version", "extra"]), values),
       st.booleans())
def test_a_declaration_decodes_exactly_like_the_built_in_struct(declared, changes, fast):
    payload = json.dumps({**GOOD, **changes}).encode()
    want = decode_batch("fraud_transaction", [payload], fast=fast)
    for name in (declared, "json_schema_fraud"):
        got = decode_batch(name, [payload], fast=fast)
        assert [r.code for r in got.rejected] == [r.code for r in want.rejected]
        assert [msgspec.structs.asdict(e) for e in got.events] == \
            [msgspec.structs.asdict(e) for e in want.events]


def test_avro_record_with_nullable_enum_and_default():
    schema = {"type": "record", "name": "Login", "fields": [
        {"name": "user_id", "type": "long"},
        {"name": "ip", "type": "string"},
        {"name": "method", "type": {"type": "enum", "name": "M", "symbols": ["pw", "sso"]}},
        {"name": "device", "type": ["null", "string"], "default": None},
        {"name": "attempts", "type": "int", "default": 1},
        {"name": "ts", "type": "double"},
    ]}
    register_schema("login_avro", build_struct("login", from_avro(schema, key="user_id",
                                                                   time="ts")))
    ok = json.dumps({"user_id": 7, "ip": "1.2.3.4", "method": "sso", "ts": 1.8e9}).encode()
    bad = json.dumps({"user_id": 7, "ip": "1.2.3.4", "method": "otp", "ts": 1.8e9}).encode()
    ms = json.dumps({"user_id": 7, "ip": "1.2.3.4", "method": "pw", "ts": 1.8e12}).encode()
    batch = decode_batch("login_avro", [ok, bad, ms])
    assert batch.indices == [0]
    assert batch.events[0].attempts == 1 and batch.events[0].device is None
    assert [r.code for r in batch.rejected] == ["invalid_value", "out_of_range"]


@pytest.mark.parametrize(("decl", "message"), [
    (EventDecl(fields={}, key="k"), "no fields"),
    (EventDecl(fields={"a": FieldDecl(type="string")}, key="k"), "key field 'k'"),
    (EventDecl(fields={"a": FieldDecl(type="string", min=1)}, key="a"), "min/max"),
    (EventDecl(fields={"a": FieldDecl(type="integer", pattern="x")}, key="a"), "pattern"),
    (EventDecl(fields={"a": FieldDecl(type="string", pattern="(")}, key="a"), "bad pattern"),
    (EventDecl(fields={"a": FieldDecl(type="string", enum=[1])}, key="a"), "enum"),
    (EventDecl(fields={"a b": FieldDecl(type="string")}, key="a b"), "identifier"),
    (EventDecl(fields={"a": FieldDecl(type="string")}, key="a", time="a"), "timestamp"),
])
def test_a_bad_declaration_is_one_clear_config_error(decl, message):
    with pytest.raises(ConfigError, match=message):
        build_struct("x", decl)


def test_unsupported_schema_shapes_are_refused_not_loosened():
    with pytest.raises(ConfigError, match=r"type .object. is not supported"):
        from_json_schema({"type": "object", "properties": {"a": {"type": "object"}}}, key="a")
    with pytest.raises(ConfigError, match="union"):
        from_avro({"type": "record", "name": "R", "fields": [
            {"name": "a", "type": ["int", "string"]}]}, key="a")


def test_registering_other_fields_under_a_taken_name_is_refused(declared):
    other = build_struct("x", EventDecl(fields={"a": FieldDecl(type="string")}, key="a"))
    with pytest.raises(ConfigError, match="already registered"):
        register_schema(declared, other)
