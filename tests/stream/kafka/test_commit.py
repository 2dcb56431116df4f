"""The commit owner on a real broker: records the broker refuses are replaced, never a stop.

Each test has its own topics and group. Refusals are real: a dead-letter topic whose
``max.message.bytes`` is smaller than a record (refused by the broker, in the delivery
report) and a producer whose ``message.max.bytes`` is smaller than another (refused by
``produce()`` at once).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from stream.kafka.clients import AckedProducer, BatchConsumer, DeliveryFailed, next_offsets
from stream.kafka.commit import CommitOwner
from stream.kafka.inflight import InFlight
from stream.kafka.rejects import Replacer

pytestmark = pytest.mark.integration


def _topics(bootstrap: str, name: str, dlq_limit: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([
        NewTopic(f"{name}.in", 1, 1), NewTopic(f"{name}.out", 1, 1),
        NewTopic(f"{name}.dlq", 1, 1, config={"max.message.bytes": str(dlq_limit)}),
    ])
    for f in futures.values():
        f.result(30)


def _input(bootstrap: str, name: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce(f"{name}.in", json.dumps({"i": i}).encode(), b"k")
    assert p.flush(30) == 0


def _consume(consumer: BatchConsumer, n: int) -> list:
    got: list = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        got += consumer.consume(n - len(got), 0.5)
    assert len(got) == n
    return got


def _read(bootstrap: str, topic: str, want: int, *, read_committed: bool = False) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "r" + os.urandom(4).hex(),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed" if read_committed
                  else "read_uncommitted"})
    c.assign([TopicPartition(topic, 0)])
    out: list = []
    deadline = time.monotonic() + 30
    while len(out) < want and time.monotonic() < deadline:
        out += [m for m in c.consume(100, 0.2) if m.error() is None]
    time.sleep(0.5)
    out += [m for m in c.consume(100, 0.5) if m.error() is None]
    c.close()
    return out


def _committed(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=15)[0].offset
    finally:
        c.close()


def _owner(bootstrap: str, name: str, **kw) -> tuple:
    """An at-least-once commit owner reading ``name``.in in group ``name``-g."""
    consumer = BatchConsumer(bootstrap, f"{name}-g", [f"{name}.in"])
    producer = AckedProducer(bootstrap)
    return consumer, producer, CommitOwner(producer, consumer, window=InFlight(), **kw)


def _dead_letter_of(source: dict, topic: str) -> bytes:
    # A dead letter the way the batch core writes one, with a large payload (random:
    # the producer compresses, and the broker's limit applies to the compressed batch).
    return json.dumps({"pipeline": "p", "error_code": "not_json", "error": "x",
                       "payload": base64.b64encode(os.urandom(4500)).decode(),
                       "payload_size": 4500, "topic": topic, "partition": 0,
                       "offset": source["i"]}).encode()


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_refused_records_become_minimal_dead_letters_and_the_batch_commits(
        bootstrap, unique_name, exactly_once):
    name = unique_name
    _topics(bootstrap, name, dlq_limit=3000)
    _input(bootstrap, name, 4)
    refused: list = []
    group = f"{name}-g"
    consumer = BatchConsumer(bootstrap, group, [f"{name}.in"], read_committed=exactly_once)
    # produce() itself refuses records over 20 kB (the producer's message.max.bytes).
    producer = AckedProducer(bootstrap, {"message.max.bytes": 20_000},
                             transactional_id=f"{name}-tx" if exactly_once else None)
    owner = CommitOwner(producer, consumer, exactly_once=exactly_once, window=InFlight(),
                        ack_timeout_s=30,
                        replacer=Replacer("p", f"{name}.dlq", "w1",
                                          on_refused=lambda t, e: refused.append((t, e))))
    try:
        msgs = _consume(consumer, 4)
        sources = [json.loads(m.value()) for m in msgs]
        big_decision = json.dumps({"event_id": "e1", "source_topic": f"{name}.in",
                                   "source_partition": 0, "source_offset": 1,
                                   "pad": "x" * 30_000}).encode()
        outputs = [
            (f"{name}.out", [(b"k", b'{"event_id": "e0"}'), (b"k", big_decision)]),
            # refused by the broker: the topic takes 3000 bytes at most
            (f"{name}.dlq", [(b"k", _dead_letter_of(sources[2], f"{name}.in"))]),
        ]
        owner.commit_batch(outputs, next_offsets(msgs), time.perf_counter())
        if not exactly_once:
            assert InFlight.wait(producer.poll_for, owner._settled, 30)
            owner.settle()
    finally:
        owner.close()
    assert len(refused) == 2, refused
    out = _read(bootstrap, f"{name}.out", 1, read_committed=exactly_once)
    assert [json.loads(m.value())["event_id"] for m in out] == ["e0"]
    dead = [json.loads(m.value())
            for m in _read(bootstrap, f"{name}.dlq", 2, read_committed=exactly_once)]
    assert len(dead) == 2
    assert {d["error_code"] for d in dead} == {"output_rejected"}
    by_offset = {d["offset"]: d for d in dead}
    assert set(by_offset) == {1, 2}  # each names the input it answers
    assert by_offset[1]["payload_size"] == len(big_decision)
    assert by_offset[1]["payload_sha256"] == hashlib.sha256(big_decision).hexdigest()
    assert all(d["topic"] == f"{name}.in" and not d.get("payload") for d in dead)
    assert _committed(bootstrap, group, f"{name}.in") == 4  # the batch is done


def test_a_refused_replacement_stops_with_one_clear_line(bootstrap, unique_name):
    # The dead-letter topic refuses even a minimal dead letter: a misconfigured topic,
    # nothing a restart could change; the batch stays uncommitted.
    name = unique_name
    _topics(bootstrap, name, dlq_limit=120)
    _input(bootstrap, name, 2)
    group = f"{name}-g"
    consumer, producer, owner = _owner(bootstrap, name, ack_timeout_s=30,
                                       replacer=Replacer("p", f"{name}.dlq", "w1"))
    try:
        msgs = _consume(consumer, 2)
        owner.commit_batch([(f"{name}.dlq", [(b"k", os.urandom(500))])], next_offsets(msgs),
                           time.perf_counter())
        with pytest.raises(DeliveryFailed, match=r"refused too.*max\.message\.bytes"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                producer.poll_for(0.1)
                owner.settle()
    finally:
        owner.close()
    assert _committed(bootstrap, group, f"{name}.in") < 0  # nothing committed


def test_after_a_revoke_timeout_in_flight_batches_do_not_commit_revoked_partitions(
        bootstrap, unique_name):
    name = unique_name
    _topics(bootstrap, name, dlq_limit=1_000_000)
    _input(bootstrap, name, 3)
    group = f"{name}-g"
    consumer, _, owner = _owner(bootstrap, name, ack_timeout_s=0.2)
    window = owner.window
    try:
        msgs = _consume(consumer, 3)
        # A batch whose outputs are not acknowledged within the revoke's drain: opened
        # by hand and left unsealed (as if its acks were late).
        batch = window.open(next_offsets(msgs[:2]), time.perf_counter())
        owner.revoke({(f"{name}.in", 0)})
        # Another member now owns the partition and has committed further (past the
        # stale batch's offset 2).
        consumer.consumer.commit(offsets=[TopicPartition(f"{name}.in", 0, 3)],
                                 asynchronous=False)
        window.seal(batch)  # its acks arrive at last: nothing to commit for it
        owner.settle()
        assert len(window) == 0
    finally:
        owner.close()
    assert _committed(bootstrap, group, f"{name}.in") == 3
