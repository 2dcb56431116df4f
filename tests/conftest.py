"""Session fixtures: a real Kafka broker and a real Redis, unique names per test.

The session broker is the embedded one of ``STREAMSCORE_BROKER`` (default ``auto``:
Apache Kafka where Java 17+ runs, else noida-db), unless KAFKA_BOOTSTRAP_SERVERS points
at a running cluster. With ``CI=true`` on a machine with Java, ``auto`` means Apache Kafka
and failing to start it fails the run. The emulators keep a small matrix through
``any_broker`` (see stream/dev/embedded.py). Redis is REDIS_URL, else a redis-server the
session starts and stops.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from stream.dev.embedded import (
    BROKER_KINDS,
    EmbeddedProcess,
    broker_version,
    client_settings_for,
    default_broker_kind,
    redis_origin,
    resolve_broker_kind,
    resolve_redis,
    start_broker,
)
from stream.dev.kafka import java_binary, kafka_available

_started: dict[str, EmbeddedProcess] = {}
_start_s: dict[str, tuple[str, float]] = {}  # kind -> (kind and version, seconds)


@functools.cache
def _session_kind() -> str:
    """The session broker's kind; on CI with Java, ``auto`` may not fall back silently."""
    kind = default_broker_kind()
    if kind == "auto" and os.environ.get("CI", "").lower() == "true" and java_binary():
        return "kafka"
    return resolve_broker_kind(kind)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the broker (kind and version) and where Redis comes from."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    kind = _session_kind()
    broker = f"external {external}" if external else f"{kind} {broker_version(kind)}".strip()
    return [f"streamscore: broker {broker}; redis {redis_origin()}"]


def _broker(kind: str) -> EmbeddedProcess:
    if kind not in _started:
        t0 = time.perf_counter()
        _started[kind] = start_broker(kind)
        _start_s[kind] = (_started[kind].label, time.perf_counter() - t0)
    return _started[kind]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How long each embedded broker took to start (format, JVM start-up, first metadata)."""
    for label, seconds in _start_s.values():
        terminalreporter.write_line(f"streamscore: broker {label} started in {seconds:.1f} s")


@pytest.fixture(scope="session", autouse=True)
def _stop_embedded() -> Iterator[None]:
    yield
    for proc in _started.values():
        proc.stop()
    _started.clear()


@pytest.fixture(scope="session")
def broker_kind() -> str:
    """The broker kind most tests run on (STREAMSCORE_BROKER, default auto)."""
    return _session_kind()


@pytest.fixture(scope="session")
def bootstrap(broker_kind: str) -> str:
    """Bootstrap servers of the session's broker (a real cluster if configured)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        return external
    return _broker(broker_kind).address


@pytest.fixture(scope="session", params=BROKER_KINDS)
def any_broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(kind, bootstrap) for each embedded broker kind in turn (Kafka where it runs)."""
    kind = str(request.param)
    if kind == "kafka" and _session_kind() != "kafka" and not kafka_available():
        pytest.skip("Apache Kafka needs Java 17+ and its jars (Maven)")
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
