"""Framed Protobuf: the registered (serialized) descriptor reads the body into the Struct.

The header and message indexes are written by confluent-kafka's own ``SchemaId`` (the
client's framing code), the bodies by protobuf from a descriptor built here; the writer
schema is what a registry returns for ``format=serialized``: a base64
``FileDescriptorProto``.
"""

from __future__ import annotations

import base64

import msgspec
import pytest

from schemas.registry import decode_batch
from schemas.wireformat import FramedDecoder, WriterSchema
from schemas.wireproto import ProtoFile, read_message_indexes

descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
SchemaId = pytest.importorskip("confluent_kafka.schema_registry.common.serde").SchemaId

F = descriptor_pb2.FieldDescriptorProto
FIELDS = [("event_id", F.TYPE_STRING), ("card_id", F.TYPE_INT64),
          ("merchant_id", F.TYPE_STRING), ("amount", F.TYPE_DOUBLE),
          ("currency", F.TYPE_STRING), ("country", F.TYPE_STRING),
          ("channel", F.TYPE_ENUM), ("mcc", F.TYPE_INT32), ("event_time", F.TYPE_DOUBLE)]
GOOD = {"event_id": "e1", "card_id": 42, "merchant_id": "m7", "amount": 12.5,
        "currency": "EUR", "country": "DE", "channel": "ecom", "mcc": 5411,
        "event_time": 1_795_000_000.0}


def fraud_file(syntax: str) -> descriptor_pb2.FileDescriptorProto:
    """``shop.Other`` (index 0), ``shop.Txn`` (index 1) with ``Txn.Inner`` ([1, 0])."""
    fd = descriptor_pb2.FileDescriptorProto(name="fraud.proto", package="shop", syntax=syntax)
    fd.message_type.add(name="Other").field.add(name="x", number=1, type=F.TYPE_STRING,
                                                label=F.LABEL_OPTIONAL)
    txn = fd.message_type.add(name="Txn")
    enum = txn.enum_type.add(name="Channel")
    for number, name in enumerate(["pos", "ecom", "atm", "moto"]):
        enum.value.add(name=name, number=number)
    for number, (name, typ) in enumerate(FIELDS, 1):
        f = txn.field.add(name=name, number=number, type=typ, label=F.LABEL_OPTIONAL)
        if typ == F.TYPE_ENUM:
            f.type_name = ".shop.Txn.Channel"
    txn.nested_type.add(name="Inner").field.add(name="event_id", number=1,
                                                type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    return fd


def message_class(fd: descriptor_pb2.FileDescriptorProto, name: str):
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def framed(schema_id: int, indexes: list[int], message) -> bytes:
    return SchemaId("PROTOBUF", schema_id, message_indexes=indexes).id_to_bytes() + \
        message.SerializeToString()


@pytest.fixture(scope="module", params=["proto3", "proto2"])
def setup(request):
    fd = fraud_file(request.param)
    writer = WriterSchema(11, "PROTOBUF", base64.b64encode(fd.SerializeToString()).decode())
    decoder = FramedDecoder("fraud_transaction", lambda schema_id: writer)
    return request.param, fd, decoder, message_class(fd, "shop.Txn")


def txn(cls, **values):
    msg = cls()
    for k, v in values.items():
        setattr(msg, k, cls.Channel.Value(v) if k == "channel" else v)
    return msg


def test_protobuf_decodes_value_for_value_like_the_json_path(setup):
    _, _, decoder, cls = setup
    rows = [{**GOOD, "event_id": f"e{i}", "card_id": i, "channel": ch}
            for i, ch in enumerate(["pos", "ecom", "atm", "moto"] * 5)]
    got = decoder.decode_batch([framed(11, [1], txn(cls, **r)) for r in rows])
    want = decode_batch("fraud_transaction", [msgspec.json.encode(r) for r in rows])
    assert got.indices == want.indices and not got.rejected
    assert got.events == want.events


def test_protobuf_rejections_are_coded_like_the_json_path(setup):
    syntax, fd, decoder, cls = setup
    other = message_class(fd, "shop.Other")
    missing = {k: v for k, v in GOOD.items() if k != "mcc"}
    batch = [
        framed(11, [1], txn(cls, **{**GOOD, "amount": -3.0})),   # the Struct's bound
        framed(11, [1], txn(cls, **{**GOOD, "country": "KPX"})),  # the Struct's pattern
        framed(11, [1], txn(cls, **missing)),                     # mcc not set
        framed(11, [7], txn(cls, **GOOD)),                        # no 8th message
        framed(11, [1], txn(cls, **GOOD))[:-4],                   # truncated body
        framed(11, [0], other(x="y")),                            # another message type
    ]
    got = decoder.decode_batch(batch)
    codes = [(r.index, r.code) for r in got.rejected]
    # proto3 cannot tell an unset int from 0: mcc=0 is a valid value there.
    missing_code = [(2, "missing_field")] if syntax == "proto2" else []
    assert codes == [(0, "out_of_range"), (1, "invalid_value"), *missing_code,
                     (3, "undecodable"), (4, "undecodable"), (5, "missing_field")]
    assert got.indices == ([] if syntax == "proto2" else [2])


def test_message_indexes_reach_nested_types(setup):
    _, fd, _, _ = setup
    proto = ProtoFile.from_serialized(base64.b64encode(fd.SerializeToString()).decode())
    inner = message_class(fd, "shop.Txn.Inner")(event_id="deep")
    assert proto.record(framed(11, [1, 0], inner), 5) == {"event_id": "deep"}
    for indexes in ([0], [1], [1, 0], [3, 2, 1]):
        header = SchemaId("PROTOBUF", 1, message_indexes=indexes).id_to_bytes()
        assert read_message_indexes(header + b"rest", 5) == (tuple(indexes), len(header))


def test_a_text_schema_is_refused_with_the_reason():
    writer = WriterSchema(12, "PROTOBUF", 'syntax = "proto3"; message M { string a = 1; }')
    got = FramedDecoder("fraud_transaction", lambda _: writer).decode_batch(
        [b"\0\0\0\0\x0c\0\x0a\x01a"])
    assert [r.code for r in got.rejected] == ["unsupported_schema"]
    assert "format=serialized" in got.rejected[0].message
