"""InFlight with plain values: only the acknowledged prefix is released, failures stop it."""

from __future__ import annotations

from collections import namedtuple

from stream.kafka.inflight import InFlight

TP = namedtuple("TP", "topic partition offset")


class Err:
    def str(self) -> str:
        return "Broker: Message size too large"


class Msg:
    def topic(self) -> str:
        return "out"


def batch(q: InFlight, offsets, n_out: int):
    b = q.open([TP("in", p, o) for p, o in offsets], 0.0)
    b.add(n_out)
    q.seal(b)
    return b


def ack(b, n: int, err=None) -> None:
    for _ in range(n):
        b.delivered(err, Msg())


def test_only_the_acknowledged_prefix_is_released():
    q = InFlight(max_batches=8, max_records=1000)
    b1 = batch(q, [(0, 10), (1, 5)], 3)
    b2 = batch(q, [(0, 20)], 2)
    b3 = batch(q, [(1, 9)], 1)
    ack(b2, 2)
    ack(b3, 1)  # later batches acked first: nothing may be committed yet
    assert q.release() == ([], [])
    ack(b1, 2)
    assert q.release() == ([], [])  # one record of b1 still out
    ack(b1, 1)
    done, offsets = q.release()
    assert done == [b1, b2, b3] and len(q) == 0 and q.records == 0
    # the latest offset per partition covers the earlier batches
    assert sorted(offsets) == [TP("in", 0, 20), TP("in", 1, 9)]


def test_a_failed_batch_stops_the_prefix_for_good():
    q = InFlight()
    b1 = batch(q, [(0, 10)], 1)
    b2 = batch(q, [(0, 20)], 2)
    b3 = batch(q, [(0, 30)], 1)
    ack(b1, 1)
    ack(b2, 1)
    ack(b2, 1, Err())
    ack(b3, 1)
    assert q.error() == "out: Broker: Message size too large"
    done, offsets = q.release()
    assert done == [b1] and offsets == [TP("in", 0, 10)]  # never b2's or b3's offsets
    assert q.release() == ([], []) and len(q) == 2
    assert q.settled()


def test_callbacks_before_sealing_do_not_complete_a_batch():
    q = InFlight()
    b = q.open([TP("in", 0, 1)], 0.0)
    b.add(2)
    ack(b, 2)  # served while the batch is still being produced (queue-full drain)
    assert not b.done and q.release() == ([], [])
    b.add(1)
    q.seal(b)
    assert not b.done and b.acked_at is None
    ack(b, 1)
    assert b.done and b.acked_at is not None  # the fetch -> ack histogram's end point
    assert q.release()[0] == [b]


def test_bounds_and_settled():
    q = InFlight(max_batches=3, max_records=10)
    b1 = batch(q, [(0, 1)], 4)
    assert not q.full and not q.settled()
    batch(q, [(0, 2)], 4)
    assert not q.full
    batch(q, [(0, 3)], 1)  # 3 batches: the bound
    assert q.full
    ack(b1, 4)
    q.release()
    assert not q.full and q.records == 5
    batch(q, [(0, 4)], 5)  # 10 records: the bound
    assert q.full
    one = InFlight(max_batches=1)
    batch(one, [(0, 1)], 1)
    assert one.full  # 1 = wait for each batch's own acks (the former serial loop)
    assert InFlight.wait(lambda t: None, lambda: True, 0.1)
    assert not InFlight.wait(lambda t: None, lambda: False, 0.05)
