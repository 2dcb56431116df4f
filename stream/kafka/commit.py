"""The one owner of the commit order: outputs produced -> acknowledged -> input committed.

``CommitOwner`` is the only code that commits input offsets. Every rule about when an
offset may be committed is written down here, as numbered steps where they happen:

- ``commit_batch``: one batch's outputs (decisions, dead letters, drift records) and the
  input offsets they answer;
- ``settle``: between batches, commit the acknowledged prefix of the batches in flight;
- ``revoke``: partitions leave (rebalance, or lost membership);
- ``close``: shutdown.

At-least-once mode pipelines acknowledgement (``stream.kafka.inflight``): a batch's
offsets are committed once its outputs and those of every earlier batch are acknowledged,
while later batches are already being scored; the first delivery failure stops the
worker with that batch and every later one uncommitted (re-delivered, never lost).
Exactly-once mode keeps one Kafka transaction per batch: outputs and input offsets become
visible to read_committed consumers together, or not at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaException, TopicPartition

from stream.kafka.clients import ACK_TIMEOUT_S, AckedProducer, BatchConsumer, DeliveryFailed
from stream.kafka.inflight import Batch, InFlight

__all__ = ["CommitOwner", "Outputs"]

log = logging.getLogger(__name__)

# (topic, [(key, value), ...]) per output topic of one batch.
Outputs = Sequence[tuple[str, Sequence[tuple[bytes | None, bytes]]]]


class CommitOwner:
    """Produces each batch's outputs and commits its input offsets, in that order only."""

    def __init__(
        self,
        producer: AckedProducer,
        consumer: BatchConsumer,
        *,
        exactly_once: bool = False,
        window: InFlight | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        on_acked: Callable[[list[float]], None] | None = None,
    ) -> None:
        self.producer, self.consumer = producer, consumer
        self.exactly_once = exactly_once
        # Batches produced but not yet acknowledged (at-least-once mode): bounded, so a
        # slow broker pauses input instead of growing memory.
        self.window = window if window is not None else InFlight()  # (an empty one is falsy)
        self.ack_timeout_s = ack_timeout_s
        # Told, after each commit, fetch -> acknowledgement seconds of the input batches
        # it covered (metrics, the run's busy time).
        self._on_acked = on_acked
        self._closing = False

    # ---- one batch -----------------------------------------------------------------------

    def commit_batch(self, outputs: Outputs, offsets: list[TopicPartition],
                     fetched_at: float) -> None:
        """Make a batch's outputs durable, then (and only then) commit its input offsets.

        ``offsets`` is empty for records that answer no input (a drift window closed
        while idle): they are tracked all the same, so a rejected one stops the worker.
        """
        if self.exactly_once:
            self._transaction(outputs, offsets, fetched_at)
            return
        window, producer = self.window, self.producer
        # 1. open the batch in the window before producing, so its delivery callbacks
        #    find it;
        batch = window.open(offsets, fetched_at)
        # 2. produce every output with the batch's own delivery callback (not waiting for
        #    the acks: later batches are scored meanwhile);
        for topic, records in outputs:
            if records:
                producer.produce_many(topic, records, batch.delivered, batch.add)
        # 3. seal it: from now on "nothing pending" means "all acknowledged";
        window.seal(batch)
        # 4. serve the acks that arrived and commit the acknowledged prefix (a rejected
        #    output raises here: this batch and every later one stay uncommitted);
        self.settle()
        # 5. backpressure: while the window is full, wait for acks (committing as they
        #    come) before the next consume().
        if window.full:
            window.waits += 1
            if not window.wait(producer.poll_for, self._room, self.ack_timeout_s):
                raise DeliveryFailed(f"{window.records} output records not acknowledged "
                                     f"in {self.ack_timeout_s:g} s")

    def _transaction(self, outputs: Outputs, offsets: list[TopicPartition],
                     fetched_at: float) -> None:
        # Exactly-once: any failure aborts the transaction, so neither the outputs nor
        # the offsets become visible; the batch is re-read.
        producer = self.producer
        p = producer.producer
        # 1. begin the batch's transaction;
        p.begin_transaction()
        try:
            # 2. produce every output of the batch;
            for topic, records in outputs:
                producer.produce_many(topic, records)
            # 3. send the input offsets to the same transaction;
            if offsets:
                p.send_offsets_to_transaction(
                    offsets, self.consumer.consumer.consumer_group_metadata(), 30
                )
            # 4. commit it: flushes, and makes outputs and offsets visible together.
            p.commit_transaction(60)
            producer.outstanding = 0  # the commit flushed and acknowledged everything
            if producer.error is not None:
                err, producer.error = producer.error, None
                raise DeliveryFailed(f"broker rejected an output record: {err}")
        except KafkaException as exc:
            p.abort_transaction(30)
            raise DeliveryFailed(f"transaction aborted: {exc}") from None
        if offsets and self._on_acked is not None:
            self._on_acked([time.perf_counter() - fetched_at])

    # ---- between batches -----------------------------------------------------------------

    def settle(self) -> None:
        """Serve the acks that arrived and commit the acknowledged prefix (at-least-once).

        Raises ``DeliveryFailed`` once any batch has a rejected output: that batch and
        every later one are never committed (re-delivered after the restart). Nothing to
        do in exactly-once mode: each batch committed in its own transaction.
        """
        if self.exactly_once:
            return
        self.producer.poll()
        self._release()
        err = self.window.error()
        if err is not None:
            raise DeliveryFailed(f"broker rejected an output record: {err}")

    def _room(self) -> bool:
        # Release (and commit) the acknowledged prefix first: acked batches only leave
        # the window there. Raises on a delivery failure (stop, don't wait).
        self._release()
        err = self.window.error()
        if err is not None:
            raise DeliveryFailed(f"broker rejected an output record: {err}")
        return not self.window.full

    def _release(self) -> list[Batch]:
        # The longest prefix of fully acknowledged, error-free batches leaves the window;
        # its offsets (per partition the latest) are committed asynchronously: queued
        # behind the acks they depend on, so a crash before it lands only re-delivers.
        done, offsets = self.window.release()
        if offsets:
            self.consumer.commit(offsets)
        if done and self._on_acked is not None:
            # fetch -> the moment the batch's last delivery report was served (poll()),
            # not the later moment it was released; drift-only batches answer no input.
            now = time.perf_counter()
            self._on_acked([(b.acked_at or now) - b.fetched_at for b in done if b.offsets])
        return done

    def _drain(self) -> None:
        """Wait until every batch in flight is acknowledged, then commit them (async).

        A delivery failure is left for the loop to raise: only the clean prefix before it
        is committed here.
        """
        if self.exactly_once or self._closing or not len(self.window):
            return
        window = self.window
        if not window.wait(self.producer.poll_for, window.settled, self.ack_timeout_s):
            log.warning("%d output records still unacknowledged after %g s; their batches "
                        "stay uncommitted (re-delivered)", window.records, self.ack_timeout_s)
        self._release()

    # ---- partitions leave ----------------------------------------------------------------

    def revoke(self, gone: set[tuple[str, int]], lost: bool = False) -> None:
        """Partitions are leaving (``BatchConsumer``'s ``on_leaving``, inside consume())."""
        # 1. wait until every batch in flight is acknowledged and commit (async) the
        #    acknowledged prefix: this records its offsets (also when lost: the acks of
        #    the batches in flight are settled all the same);
        self._drain()
        # 2. revoked: commit those partitions' acknowledged offsets synchronously, so the
        #    next owner starts exactly after what we finished (lost: we are no longer a
        #    member, a commit would be refused); then forget them, the next owner commits
        #    them from now on. A batch whose outputs failed is not in the prefix: the
        #    next owner re-reads it.
        self.consumer.hand_back(gone, lost=lost)

    # ---- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        """Shut down: nothing acknowledged is left uncommitted, nothing unacknowledged is."""
        try:
            # 1. every batch in flight acknowledged and its offsets committed (async; the
            #    prefix before any failed batch only);
            self._drain()
            # 2. the consumer's close may revoke: nothing is left to drain then;
            self._closing = True
            # 3. the producer flushed and closed;
            self.producer.close()
        except Exception:
            log.exception("flushing on shutdown failed")
        finally:
            # 4. the consumer commits what is acknowledged, synchronously, and leaves
            #    the group.
            self.consumer.close()
