"""Session fixtures: a real Kafka-protocol broker and a real Redis, unique names per test.

Brokers are the embedded ones (see stream/dev/embedded.py) unless KAFKA_BOOTSTRAP_SERVERS
points at a real cluster. Redis is REDIS_URL, else 127.0.0.1:6379 if it answers, else
a redis-server the session starts and stops.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from stream.dev.embedded import (
    BROKER_KINDS,
    EmbeddedProcess,
    client_settings_for,
    default_broker_kind,
    resolve_redis,
    start_broker,
)

_started: dict[str, EmbeddedProcess] = {}


def _broker(kind: str) -> EmbeddedProcess:
    if kind not in _started:
        _started[kind] = start_broker(kind)
    return _started[kind]


@pytest.fixture(scope="session", autouse=True)
def _stop_embedded() -> Iterator[None]:
    yield
    for proc in _started.values():
        proc.stop()
    _started.clear()


@pytest.fixture(scope="session")
def broker_kind() -> str:
    """The broker kind most tests run on (STREAMSCORE_BROKER, default noida)."""
    return default_broker_kind()


@pytest.fixture(scope="session")
def bootstrap(broker_kind: str) -> str:
    """Bootstrap servers of the session's broker (a real cluster if configured)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        return external
    return _broker(broker_kind).address


@pytest.fixture(scope="session", params=BROKER_KINDS)
def any_broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(kind, bootstrap) for each embedded broker kind in turn."""
    kind = str(request.param)
    return kind, _broker(kind).address


@pytest.fixture(scope="session")
def kafka_client_settings(broker_kind: str) -> dict[str, str | int]:
    """Client settings suited to the session's broker."""
    return dict(client_settings_for(broker_kind))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server."""
    server = resolve_redis()
    yield server.url
    server.stop()


@pytest.fixture
def unique_name() -> str:
    """A short unique lowercase name for topics, groups, Feast projects, key prefixes."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def make_topic(bootstrap: str, unique_name: str) -> Callable[..., str]:
    """Factory: create a fresh topic on the session broker and return its name."""
    from stream.kafka.admin import ensure_topics

    counter = iter(range(1000))

    def make(suffix: str = "", partitions: int = 1) -> str:
        name = f"{unique_name}-{suffix or next(counter)}"
        ensure_topics(bootstrap, [name], partitions=partitions)
        return name

    return make
