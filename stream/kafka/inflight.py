"""Pipelined acknowledgement: batches produced but not yet acknowledged, in consume order.

The worker does not wait for a batch's acks before it consumes the next batch (that
serialised every batch behind the broker's round trip). Instead each batch's outputs
carry that batch's delivery callback, which counts its outstanding records down, and
after every loop turn the worker commits the input offsets of the *longest prefix* of
fully acknowledged batches. So the commit-after-ack rule still holds per batch:

- a batch's offsets are committed only when every output of that batch and of every
  batch consumed before it is acknowledged (the prefix rule: offsets are per partition,
  and committing batch k+1's offset would also cover batch k's records);
- the first delivery failure stops the worker: the clean prefix before the failed batch
  is committed, the failed batch and every later one never are (they are re-delivered,
  never lost);
- the in-flight work is bounded (batches and records); when it is full the worker waits
  for acks before it consumes more: that is the backpressure.

Kafka-free apart from the ``TopicPartition`` values it passes through; the worker does
the polling, the commits and the waiting.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Batch", "InFlight"]


class Batch:
    """One consumed batch: its input offsets and how many of its outputs are unacknowledged."""

    __slots__ = ("acked_at", "error", "failed", "fetched_at", "n_out", "offsets", "pending",
                 "sealed")

    def __init__(self, offsets: list[Any], fetched_at: float) -> None:
        self.offsets = offsets  # next offsets per input partition (TopicPartition)
        self.fetched_at = fetched_at  # perf_counter() when consume() returned it
        self.pending = 0  # produced - acknowledged (may dip below 0 before sealing)
        self.n_out = 0  # records produced for this batch
        self.sealed = False  # every output produced: pending == 0 now means "all acked"
        self.error: str | None = None  # the batch can never be committed: the worker stops
        # Records the broker refused, (topic, key, value, error, attempt), not yet looked
        # at by the commit owner (stream.kafka.commit: a content refusal is retried, then
        # replaced by a dead letter; any other refusal fails the batch).
        self.failed: list[tuple[str, Any, bytes, Any, int]] = []
        self.acked_at: float | None = None  # perf_counter() when its last ack was served

    def delivered(self, err: Any, msg: Any) -> None:
        """The producer's delivery callback for this batch's records (served by poll())."""
        self.pending -= 1
        if err is not None:
            self.failed.append((msg.topic(), msg.key(), msg.value(), err, 0))
        if self.pending <= 0 and self.sealed:
            self.acked_at = time.perf_counter()

    def refused(self, topic: str, key: Any, value: bytes, err: Any) -> None:
        """A record ``produce()`` refused at once (never counted as produced)."""
        self.failed.append((topic, key, value, err, 0))

    def again(self, attempt: int) -> tuple[Callable[[Any, Any], None],
                                          Callable[[str, Any, bytes, Any], None]]:
        """Delivery and refusal callbacks of a record produced again (``attempt`` >= 1):
        a new refusal comes back with that attempt number."""
        def delivered(err: Any, msg: Any) -> None:
            self.pending -= 1
            if err is not None:
                self.failed.append((msg.topic(), msg.key(), msg.value(), err, attempt))
            if self.pending <= 0 and self.sealed:
                self.acked_at = time.perf_counter()

        def refused(topic: str, key: Any, value: bytes, err: Any) -> None:
            self.failed.append((topic, key, value, err, attempt))

        return delivered, refused

    def add(self, n: int) -> None:
        """Count ``n`` more records produced for this batch."""
        self.pending += n
        self.n_out += n

    @property
    def done(self) -> bool:
        """Every output acknowledged (or replaced: refused records not looked at yet keep
        it open)."""
        return self.sealed and self.pending <= 0 and not self.failed


class InFlight:
    """Batches in consume order; releases the acknowledged prefix, bounds the rest."""

    def __init__(self, max_batches: int = 16, max_records: int = 65_536) -> None:
        self.max_batches = max(1, max_batches)
        self.max_records = max(1, max_records)
        self._q: deque[Batch] = deque()
        self.records = 0  # outputs produced by batches still in flight
        self.waits = 0  # times the bound made the worker wait (backpressure)

    def __len__(self) -> int:
        return len(self._q)

    def open(self, offsets: list[Any], fetched_at: float) -> Batch:
        """Start tracking a batch (before producing its outputs, so callbacks find it)."""
        b = Batch(offsets, fetched_at)
        self._q.append(b)
        return b

    def seal(self, batch: Batch) -> None:
        """Every output of ``batch`` is produced."""
        batch.sealed = True
        self.records += batch.n_out
        if batch.pending <= 0:  # acknowledged while it was still being produced (or empty)
            batch.acked_at = time.perf_counter()

    @property
    def full(self) -> bool:
        """No room for another batch: ``max_batches`` (or ``max_records``) are in flight.

        With ``max_batches=1`` every batch waits for its own acks before the next
        consume(): the former one-batch-at-a-time loop.
        """
        return len(self._q) >= self.max_batches or self.records >= self.max_records

    def with_failures(self) -> list[Batch]:
        """Batches holding refused records the commit owner has not looked at yet."""
        return [b for b in self._q if b.failed]

    def error(self) -> str | None:
        """The first delivery error of any batch in flight (the worker must stop)."""
        for b in self._q:
            if b.error is not None:
                return b.error
        return None

    def release(self) -> tuple[list[Batch], list[Any]]:
        """Pop the longest prefix of fully acknowledged, error-free batches.

        Returns those batches and the offsets to commit for them (per partition the
        latest: batches are in consume order, so a later batch's offset covers the
        earlier ones). A batch with a delivery error stops the prefix for good.
        """
        q = self._q
        if not q or not q[0].done:
            return [], []
        done: list[Batch] = []
        latest: dict[tuple[str, int], Any] = {}
        while q and q[0].done and q[0].error is None:
            b = q.popleft()
            self.records -= b.n_out
            done.append(b)
            for tp in b.offsets:
                latest[(tp.topic, tp.partition)] = tp
        return done, list(latest.values())

    def forget(self, partitions: set[tuple[str, int]]) -> int:
        """Drop these partitions' offsets from every batch still in flight; returns how
        many batches carried some.

        After a revoke whose drain timed out, the batches left in flight must not commit
        offsets of partitions that now belong to another consumer: that would rewind the
        new owner. Their outputs still count (the prefix rule), their events are re-read
        by the new owner (duplicates, never loss).
        """
        n = 0
        for b in self._q:
            kept = [tp for tp in b.offsets if (tp.topic, tp.partition) not in partitions]
            if len(kept) != len(b.offsets):
                b.offsets = kept
                n += 1
        return n

    def settled(self) -> bool:
        """Nothing more can be committed by waiting: every batch up to the first failed
        one (or all of them) is acknowledged."""
        for b in self._q:
            if b.error is not None:
                return True
            if not b.done:
                return False
        return True

    @staticmethod
    def wait(poll: Callable[[float], Any], until: Callable[[], bool], timeout_s: float) -> bool:
        """Serve delivery reports with ``poll`` until ``until()``; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poll(min(left, 0.05))
        return True
