"""The Schema Registry lookup: settings and secrets, and how registry failures surface.

The client here is confluent-kafka's real ``SchemaRegistryClient``; the outage test points
it at a loopback port nothing listens on.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.bench_wireformat import FRAUD_AVRO
from schemas.errors import ConfigError
from schemas.wireformat import FramedEncoder, SchemaRegistryUnavailable
from stream.endpoints import free_port
from stream.kafka.schema_registry import (
    ENV_BASIC_AUTH,
    ENV_SSL_KEY_PASSWORD,
    ENV_URL,
    RegistryLookup,
    client_config,
    framed_decoder,
)

pytest.importorskip("fastavro")
pytest.importorskip("authlib")

SCHEMA = {"type": "record", "name": "R", "fields": [{"name": "event_id", "type": "string"}]}


def test_url_and_secrets_come_from_the_environment():
    conf = client_config({"ssl.ca.location": "/etc/ca.pem"},
                         {ENV_URL: "https://sr:8081", ENV_BASIC_AUTH: "svc:s3cret",
                          ENV_SSL_KEY_PASSWORD: "pw"})
    assert conf["url"] == "https://sr:8081" and conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["basic.auth.user.info"] == "svc:s3cret" and conf["ssl.key.password"] == "pw"
    # The pipeline's URL wins over the environment's.
    assert client_config({"url": "http://a:1"}, {ENV_URL: "http://b:2"})["url"] == "http://a:1"


@pytest.mark.parametrize(("settings", "env", "message"), [
    ({"url": "http://a:1", "basic.auth.user.info": "u:p"}, {}, ENV_BASIC_AUTH),
    ({"url": "http://a:1", "ssl.key.password": "x"}, {}, ENV_SSL_KEY_PASSWORD),
    ({}, {}, ENV_URL),
    ({"url": "http://a:1"}, {ENV_BASIC_AUTH: "no-colon"}, "user:password"),
    ({"url": "http://a:1", "no.such.key": 1}, {}, "no.such.key"),
])
def test_bad_settings_are_one_config_error(settings, env, message):
    with pytest.raises(ConfigError, match=message):
        RegistryLookup(settings, env)


def test_an_unreachable_registry_is_retriable_and_rejects_nothing():
    url = f"http://127.0.0.1:{free_port()}"
    decoder = framed_decoder("fraud_transaction", {"url": url, "max.retries": 0,
                                                   "timeout": 2}, environ={})
    framed = FramedEncoder(7, SCHEMA).encode_batch([{"event_id": "e"}])
    with pytest.raises(SchemaRegistryUnavailable, match=url) as info:
        decoder.decode_batch(framed)
    assert info.value.retriable
    assert json.dumps(str(info.value)).count("\\n") == 0  # one line for the log


# -- against a real registry: Apicurio Registry, started on loopback ----------------------
# Records are written by confluent-kafka's AvroSerializer, which registers the schema.
# Protobuf and JSON Schema are tested client-side only (tests/schemas): this Apicurio
# release's Confluent API (v6) leaves ``schemaType`` out of ``GET /schemas/ids/{id}``,
# so every schema it returns reads as Avro.

FRAUD_AVRO_V2 = {**FRAUD_AVRO, "fields": [
    *FRAUD_AVRO["fields"], {"name": "device", "type": ["null", "string"], "default": None}]}
GOOD = {"event_id": "e1", "card_id": 42, "merchant_id": "m7", "amount": 12.5,
        "currency": "EUR", "country": "DE", "channel": "ecom", "mcc": 5411,
        "event_time": 1_795_000_000.0}


@pytest.fixture(scope="session")
def registry():
    """A real Confluent-compatible registry (Apicurio) for the session."""
    import shutil

    from stream.dev.registry import start_registry

    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("the embedded schema registry needs Java 17+ and Maven")
    server = start_registry()
    yield server
    server.stop()


@pytest.fixture
def subject_topic() -> str:
    import uuid

    return f"events-{uuid.uuid4().hex[:8]}"


def avro_serializer(url: str, schema: dict):
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer

    return AvroSerializer(SchemaRegistryClient({"url": url}), json.dumps(schema))


def serialize(serializer, topic: str, rows: list[dict]) -> list[bytes]:
    from confluent_kafka.serialization import MessageField, SerializationContext

    ctx = SerializationContext(topic, MessageField.VALUE)
    return [serializer(row, ctx) for row in rows]


def rows(n: int, **extra) -> list[dict]:
    return [{**GOOD, "event_id": f"e{i}", "card_id": i, "amount": i + 0.25, **extra}
            for i in range(n)]


@pytest.mark.integration
def test_avro_serializer_records_decode_batch_first_value_for_value(registry, subject_topic):
    import msgspec

    from schemas.registry import decode_batch

    events = rows(200)
    framed = serialize(avro_serializer(registry.url, FRAUD_AVRO), subject_topic, events)
    got = framed_decoder("fraud_transaction", {"url": registry.url}, environ={}
                         ).decode_batch(framed)
    want = decode_batch("fraud_transaction", [msgspec.json.encode(e) for e in events])
    assert got.indices == list(range(200)) and not got.rejected
    assert got.events == want.events


@pytest.mark.integration
def test_a_new_writer_version_with_a_defaulted_field_decodes(registry, subject_topic):
    from schemas.eventspec import build_struct, from_avro
    from schemas.registry import register_schema

    v1 = serialize(avro_serializer(registry.url, FRAUD_AVRO), subject_topic, rows(3))
    v2 = serialize(avro_serializer(registry.url, FRAUD_AVRO_V2), subject_topic,
                   rows(3, device="ios"))
    assert v1[0][1:5] != v2[0][1:5]  # two schema ids in one batch
    batch = [v1[0], v2[0], v1[1], v2[1], v1[2], v2[2]]
    old = framed_decoder("fraud_transaction", {"url": registry.url}, environ={},
                         reader_schema=FRAUD_AVRO).decode_batch(batch)
    assert old.indices == list(range(6)) and not old.rejected
    assert [e.event_id for e in old.events] == ["e0", "e0", "e1", "e1", "e2", "e2"]
    register_schema("fraud_v2_registry", build_struct(
        "fraud v2", from_avro(FRAUD_AVRO_V2, key="card_id", time="event_time")))
    new = framed_decoder("fraud_v2_registry", {"url": registry.url}, environ={},
                         reader_schema=FRAUD_AVRO_V2).decode_batch(batch)
    assert [e.device for e in new.events] == [None, "ios"] * 3 and not new.rejected


@pytest.mark.integration
def test_an_id_the_registry_does_not_know_is_one_rejection(registry, subject_topic):
    good = serialize(avro_serializer(registry.url, FRAUD_AVRO), subject_topic, rows(1))[0]
    unknown = b"\0" + (987_654).to_bytes(4, "big") + good[5:]
    got = framed_decoder("fraud_transaction", {"url": registry.url}, environ={}
                         ).decode_batch([good, unknown, good])
    assert got.indices == [0, 2]
    assert [(r.index, r.code) for r in got.rejected] == [(1, "unknown_schema_id")]


@pytest.mark.integration
def test_output_registered_and_framed_here_reads_back_with_confluents_deserializer(
        registry, subject_topic):
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from schemas.wireformat import FramedEncoder

    lookup = RegistryLookup({"url": registry.url}, {})
    schema_id = lookup.register(f"{subject_topic}-value", json.dumps(FRAUD_AVRO))
    assert lookup.register(f"{subject_topic}-value", json.dumps(FRAUD_AVRO)) == schema_id
    events = rows(5)
    framed = FramedEncoder(schema_id, FRAUD_AVRO).encode_batch(events)
    read = AvroDeserializer(SchemaRegistryClient({"url": registry.url}))
    ctx = SerializationContext(subject_topic, MessageField.VALUE)
    assert [read(payload, ctx) for payload in framed] == events
