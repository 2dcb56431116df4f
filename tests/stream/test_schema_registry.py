"""The Schema Registry lookup: settings and secrets, and how registry failures surface.

The client here is confluent-kafka's real ``SchemaRegistryClient``; the outage test points
it at a loopback port nothing listens on.
"""

from __future__ import annotations

import json

import pytest

from schemas.errors import ConfigError
from schemas.wireformat import FramedEncoder, SchemaRegistryUnavailable
from stream.embedded import free_port
from stream.schema_registry import (
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
