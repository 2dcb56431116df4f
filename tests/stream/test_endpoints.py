"""Where the worker finds Kafka and Redis: pipeline file, then environment, then ``dev up``."""

from __future__ import annotations

import json

import pytest

from schemas.errors import InfrastructureError
from stream.endpoints import resolve_bootstrap, resolve_redis_url


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return tmp_path


def test_bootstrap_order(home, monkeypatch):
    with pytest.raises(InfrastructureError, match="no Kafka configured"):
        resolve_bootstrap("")
    (home / "dev.json").write_text(json.dumps({"bootstrap_servers": "state:1"}))
    assert resolve_bootstrap("") == "state:1"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", " env:2 ")
    assert resolve_bootstrap("  ") == "env:2"
    assert resolve_bootstrap(" file:3 ") == "file:3"


def test_redis_order(home, monkeypatch):
    (home / "dev.json").write_text(json.dumps({"redis_url": "redis://state:1/0"}))
    assert resolve_redis_url("") == "redis://state:1/0"
    monkeypatch.setenv("REDIS_URL", "redis://env:2/0")
    assert resolve_redis_url("") == "redis://env:2/0"
    assert resolve_redis_url("redis://file:3/0") == "redis://file:3/0"
