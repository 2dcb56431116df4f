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

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"


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
    # A refused record holds its batch open until the commit owner looks at it (it is
    # replaced by a dead letter, or, as here, marks the batch failed).
    assert q.with_failures() == [b2] and not b2.done and q.error() is None
    assert q.release()[0] == [b1] and not q.settled()
    (topic, _, _, err, attempt), = b2.failed
    assert attempt == 0
    b2.failed.clear()
    b2.error = f"{topic}: {err.str()}"
    assert q.error() == "out: Broker: Message size too large"
    done, offsets = q.release()
    assert done == [] and offsets == []  # never b2's or b3's offsets
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


def test_revoked_partitions_leave_the_batches_still_in_flight():
    # A revoke whose drain timed out: batches still in flight must not commit the
    # revoked partition later (that would rewind its new owner).
    q = InFlight()
    b1 = batch(q, [(0, 10), (1, 5)], 1)
    b2 = batch(q, [(1, 7)], 1)
    assert q.forget({("in", 1)}) == 2
    ack(b1, 1)
    ack(b2, 1)
    done, offsets = q.release()
    assert done == [b1, b2] and offsets == [TP("in", 0, 10)]


def test_a_record_produced_again_comes_back_with_its_attempt():
    q = InFlight()
    b = batch(q, [(0, 3)], 1)
    ack(b, 1, Err())
    b.failed.clear()  # the owner produced it again ...
    b.add(1)
    delivered, _ = b.again(2)
    delivered(Err(), Msg())  # ... and the broker refused it again
    assert b.failed == [("out", b"k", b"v", b.failed[0][3], 2)]
    assert not b.done and q.release() == ([], [])
