"""Schema-Registry-framed payloads: batch decode into the declared Struct, one rejection each.

These are client-side tests: the framed bytes are built here (fastavro's writer plus the
5-byte header), the writer schemas come from a dict. The same decoder against a real
registry is tested in tests/stream/test_schema_registry.py.
"""

from __future__ import annotations

import copy
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.bench_wireformat import FRAUD_AVRO
from schemas.deadletter import ERROR_CODES
from schemas.eventspec import build_struct, from_avro
from schemas.registry import decode_batch, register_schema
from schemas.wireformat import (
    MAX_LOOKUPS_PER_BATCH,
    FramedDecoder,
    FramedEncoder,
    SchemaRegistryUnavailable,
    UnknownSchemaId,
    WriterSchema,
    frame,
)

fastavro = pytest.importorskip("fastavro")

# Version 2: the producer added a defaulted field (backward compatible).
FRAUD_AVRO_V2 = copy.deepcopy(FRAUD_AVRO)
FRAUD_AVRO_V2["fields"].append({"name": "device", "type": ["null", "string"], "default": None})

GOOD = {"event_id": "e1", "card_id": 42, "merchant_id": "m7", "amount": 12.5,
        "currency": "EUR", "country": "DE", "channel": "ecom", "mcc": 5411,
        "event_time": 1_795_000_000.0}


class Registry:
    """Writer schemas by id, counting lookups; ``down`` makes it unreachable."""

    def __init__(self, schemas: dict[int, tuple[str, object]]) -> None:
        self.schemas = schemas
        self.calls: list[int] = []
        self.down = False

    def __call__(self, schema_id: int) -> WriterSchema:
        self.calls.append(schema_id)
        if self.down:
            raise SchemaRegistryUnavailable("connection refused")
        if schema_id not in self.schemas:
            raise UnknownSchemaId(f"schema id {schema_id} is not in the registry")
        kind, doc = self.schemas[schema_id]
        return WriterSchema(schema_id, kind, doc if isinstance(doc, str) else json.dumps(doc))


def events(n: int) -> list[dict]:
    return [{**GOOD, "event_id": f"e{i}", "card_id": i, "amount": float(i)} for i in range(n)]


@pytest.fixture
def registry() -> Registry:
    return Registry({1: ("AVRO", FRAUD_AVRO), 2: ("AVRO", FRAUD_AVRO_V2), 3: ("JSON", "{}")})


def fields(batch) -> list[tuple]:
    return [msgspec.structs.astuple(e) for e in batch.events]


@pytest.mark.parametrize("fast", [False, True])
def test_avro_batch_decodes_value_for_value_like_the_json_path(registry, fast):
    rows = events(50)
    framed = FramedEncoder(1, FRAUD_AVRO).encode_batch(rows)
    got = FramedDecoder("fraud_transaction", registry, fast=fast).decode_batch(framed)
    want = decode_batch("fraud_transaction", [msgspec.json.encode(r) for r in rows])
    assert got.indices == want.indices == list(range(50))
    assert fields(got) == fields(want) and not got.rejected


def test_one_lookup_per_schema_id_and_batch_order_kept_across_ids(registry):
    rows = events(6)
    v1, v2 = FramedEncoder(1, FRAUD_AVRO), FramedEncoder(2, FRAUD_AVRO_V2)
    batch = [v1.encode_batch([rows[0]])[0], v2.encode_batch([{**rows[1], "device": "d"}])[0],
             frame(3, msgspec.json.encode(rows[2])), v1.encode_batch([rows[3]])[0],
             v2.encode_batch([{**rows[4], "device": None}])[0], v1.encode_batch([rows[5]])[0]]
    decoder = FramedDecoder("fraud_transaction", registry)
    got = decoder.decode_batch(batch)
    assert [e.event_id for e in got.events] == [r["event_id"] for r in rows]
    assert got.indices == list(range(6)) and not got.rejected
    decoder.decode_batch(batch)
    assert sorted(registry.calls) == [1, 2, 3]  # cached after the first batch


def test_evolution_newer_writer_and_older_reader_schema(registry):
    v2 = FramedEncoder(2, FRAUD_AVRO_V2).encode_batch([{**GOOD, "device": "ios"}])
    v1 = FramedEncoder(1, FRAUD_AVRO).encode_batch([GOOD])
    register_schema("fraud_v2_declared",
                    build_struct("fraud v2", from_avro(FRAUD_AVRO_V2, key="card_id",
                                                       time="event_time")))
    # The v1 pipeline reads v2 records (the added field is skipped) ...
    old = FramedDecoder("fraud_transaction", registry, reader_schema=FRAUD_AVRO)
    assert old.decode_batch(v2 + v1).events[0] == old.decode_batch(v1).events[0]
    # ... and a v2 pipeline reads v1 records (the added field takes its default).
    new = FramedDecoder("fraud_v2_declared", registry, reader_schema=FRAUD_AVRO_V2)
    got = new.decode_batch(v1 + v2)
    assert [e.device for e in got.events] == [None, "ios"] and not got.rejected


def test_incompatible_writer_is_one_rejection_per_payload(registry):
    registry.schemas[4] = ("AVRO", {"type": "record", "name": "FraudTransaction",
                                    "namespace": "streamscore",
                                    "fields": [{"name": "event_id", "type": "string"}]})
    framed = FramedEncoder(4, registry.schemas[4][1]).encode_batch([{"event_id": "x"}] * 2)
    got = FramedDecoder("fraud_transaction", registry, reader_schema=FRAUD_AVRO
                        ).decode_batch(framed)
    assert [r.code for r in got.rejected] == ["unsupported_schema"] * 2


@pytest.mark.parametrize("fast", [False, True])
def test_each_bad_payload_is_one_coded_rejection(registry, fast):
    enc = FramedEncoder(1, FRAUD_AVRO)
    good = enc.encode_batch([GOOD])[0]
    batch = [
        good,
        enc.encode_batch([{**GOOD, "amount": -1.0}])[0],    # the Struct's constraint
        enc.encode_batch([{**GOOD, "country": "KP\n"}])[0],  # the Struct's pattern
        frame(9, good[5:]),                                 # id the registry lacks
        b"\x02" + good[1:],                                 # not magic byte 0
        good[:3],                                           # shorter than the header
        None,
        good[:-3],                                          # truncated body
        good + b"\x00",                                     # bytes after the record
        frame(3, b'{"event_id": '),                         # JSON path: not JSON
        frame(3, msgspec.json.encode({**GOOD, "mcc": "x"})),
        b"\0" + (1).to_bytes(4, "big") + b"\xff" * 70_000,   # oversize
    ]
    got = FramedDecoder("fraud_transaction", registry, fast=fast).decode_batch(batch)
    assert got.indices == [0]
    assert [(r.index, r.code) for r in got.rejected] == [
        (1, "out_of_range"), (2, "invalid_value"), (3, "unknown_schema_id"),
        (4, "bad_framing"), (5, "bad_framing"), (6, "empty"), (7, "undecodable"),
        (8, "undecodable"), (9, "not_json"), (10, "wrong_type"), (11, "oversize")]
    assert "at `$.amount`" in got.rejected[0].message
    assert all(r.code in ERROR_CODES for r in got.rejected)


def test_unknown_id_is_asked_again_only_after_a_while(registry):
    decoder = FramedDecoder("fraud_transaction", registry)
    for _ in range(3):
        got = decoder.decode_batch([frame(9, b"\x00")])
        assert [r.code for r in got.rejected] == ["unknown_schema_id"]
    assert registry.calls == [9]


def test_a_batch_of_random_schema_ids_asks_the_registry_a_bounded_number_of_times(registry):
    decoder = FramedDecoder("fraud_transaction", registry)
    good = FramedEncoder(1, FRAUD_AVRO).encode_batch([GOOD])
    got = decoder.decode_batch([*good, *(frame(1000 + i, b"\x00") for i in range(500))])
    assert got.indices == [0] and len(got.rejected) == 500
    assert {r.code for r in got.rejected} == {"unknown_schema_id"}
    assert len(registry.calls) == MAX_LOOKUPS_PER_BATCH


def test_registry_outage_raises_and_rejects_nothing(registry):
    registry.down = True
    decoder = FramedDecoder("fraud_transaction", registry)
    framed = FramedEncoder(1, FRAUD_AVRO).encode_batch([GOOD])
    with pytest.raises(SchemaRegistryUnavailable) as info:
        decoder.decode_batch([*framed, b"junk-not-framed"])
    assert info.value.retriable
    registry.down = False  # once it answers, the same batch decodes
    got = decoder.decode_batch([*framed, b"junk-not-framed"])
    assert got.indices == [0] and [r.code for r in got.rejected] == ["bad_framing"]


def test_protobuf_and_unparsable_writer_schemas_are_refused_per_payload(registry):
    registry.schemas[5] = ("PROTOBUF", 'syntax = "proto3"; message M { string a = 1; }')
    registry.schemas[6] = ("AVRO", '{"type": "recrod"}')
    got = FramedDecoder("fraud_transaction", registry).decode_batch(
        [frame(5, b"\x00\x0a\x01a"), frame(6, b"\x02a")])
    assert [r.code for r in got.rejected] == ["unsupported_schema"] * 2
    assert "PROTOBUF" in got.rejected[0].message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=60),
                          st.binary(max_size=60).map(lambda b: frame(1, b)),
                          st.binary(max_size=60).map(lambda b: frame(3, b))),
                max_size=8))
def test_any_bytes_give_events_or_rejections_never_an_exception(payloads):
    registry = Registry({1: ("AVRO", FRAUD_AVRO), 3: ("JSON", "{}")})
    got = FramedDecoder("fraud_transaction", registry).decode_batch(payloads)
    assert sorted(got.indices + [r.index for r in got.rejected]) == list(range(len(payloads)))
    assert all(r.code in ERROR_CODES for r in got.rejected)


def test_encoder_accepts_structs(registry):
    event = decode_batch("fraud_transaction", [msgspec.json.encode(GOOD)]).events[0]
    framed = FramedEncoder(1, FRAUD_AVRO).encode_batch([event])
    assert framed[0][:5] == b"\0\0\0\0\1"
    assert FramedDecoder("fraud_transaction", registry).decode_batch(framed).events == [event]


avro_values = st.fixed_dictionaries({
    "event_id": st.text(max_size=3),
    "card_id": st.integers(-2, 2**63 - 1),
    "merchant_id": st.sampled_from(["", "m1", "x" * 65]),
    "amount": st.floats(-1, 2e9, allow_nan=False),
    "currency": st.sampled_from(["EUR", "eur", "EURO", "US\n"]),
    "country": st.sampled_from(["DE", "KP\n", "D", ""]),
    "channel": st.sampled_from(["pos", "web", "atm"]),
    "mcc": st.integers(-(2**31), 2**31 - 1),
    "event_time": st.floats(0, 5e9, allow_nan=False),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(avro_values, min_size=1, max_size=6), st.booleans())
def test_framed_avro_accepts_and_rejects_exactly_like_the_json_path(rows, fast):
    registry = Registry({1: ("AVRO", FRAUD_AVRO)})
    got = FramedDecoder("fraud_transaction", registry, fast=fast).decode_batch(
        FramedEncoder(1, FRAUD_AVRO).encode_batch(rows))
    in_avro_order = [{f["name"]: r[f["name"]] for f in FRAUD_AVRO["fields"]} for r in rows]
    want = decode_batch("fraud_transaction", [msgspec.json.encode(r) for r in in_avro_order],
                        fast=fast)
    assert got.indices == want.indices and fields(got) == fields(want)
    assert [(r.index, r.code, r.message) for r in got.rejected] == \
        [(r.index, r.code, r.message) for r in want.rejected]
