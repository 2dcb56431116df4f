"""AckedProducer waits: bounded, and acks that arrive count as progress."""

from __future__ import annotations

import threading

import pytest

from stream.endpoints import free_port
from stream.kafka.clients import AckedProducer, DeliveryFailed


def test_a_full_queue_waits_a_bounded_time_for_a_broker_that_never_acks():
    # Nothing listens on the port: no ack ever comes. The queue-full drain must give up
    # with one line instead of waiting for message.timeout.ms (here 10 minutes).
    producer = AckedProducer(f"127.0.0.1:{free_port()}",
                             {"queue.buffering.max.messages": 4, "message.timeout.ms": 600_000,
                              "log_level": 0})
    producer.drain_timeout_s = 0.5
    raised: list[BaseException] = []

    def fill() -> None:
        try:
            producer.produce_many("t", [(None, b"x")] * 20)
        except BaseException as exc:
            raised.append(exc)

    t = threading.Thread(target=fill, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the drain did not give up"
    assert raised and isinstance(raised[0], DeliveryFailed)
    assert "does not acknowledge" in str(raised[0])


@pytest.mark.integration
def test_delivery_reports_served_while_waiting_are_progress(bootstrap, make_topic):
    topic = make_topic()
    producer = AckedProducer(bootstrap)
    beats: list[int] = []
    producer.on_progress = lambda: beats.append(1)
    producer.produce(topic, None, b"x")
    for _ in range(200):
        producer.poll_for(0.05)
        if beats:
            break
    producer.close()
    assert beats
