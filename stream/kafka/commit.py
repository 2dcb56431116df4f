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

A record the broker refuses for its content is not a delivery failure: it would be
refused again after every restart. It is produced again alone, then replaced by its
minimal dead letter (``stream.kafka.rejects``), in the same batch (at-least-once) or in
the batch's next transaction (exactly-once); only a refused dead letter stops the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from stream.kafka.clients import ACK_TIMEOUT_S, AckedProducer, BatchConsumer, DeliveryFailed
from stream.kafka.inflight import Batch, InFlight
from stream.kafka.rejects import Refused, Replacer, is_content_error

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
        replacer: Replacer | None = None,
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
        # Builds the dead letter that replaces a record refused for its content (without
        # one, any refused record stops the worker).
        self.replacer = replacer
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
                producer.produce_many(topic, records, batch.delivered, batch.add,
                                      batch.refused)
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
        # the offsets become visible. A record refused for its content aborts it once:
        # the batch is then produced again, in a new transaction, with that record
        # replaced by its dead letter (a refused dead letter stops the worker).
        refused: list[Refused] = []
        replacements: set[bytes] = set()
        for round_ in range(_ROUNDS):
            try:
                self._transaction_once(outputs, offsets, refused, retry=round_ > 0)
                break
            except _Refused:
                if round_ == _ROUNDS - 1:
                    raise DeliveryFailed(f"transaction aborted {_ROUNDS} times in a row "
                                         f"while replacing refused output records") from None
                time.sleep(0.05 * round_)
                # Each round replaces the records it found refused (a record refused at
                # once aborts before later refusals are seen), so this ends. A refused
                # dead letter may only have shared a broker batch with a refused record;
                # refused in a round where no other record was, it is the topic's limit.
                again = next((r for r in refused if r[2] in replacements), None)
                if again is not None and all(r[2] in replacements for r in refused):
                    raise DeliveryFailed(
                        f"{again[0]}: {again[3].str()} (the dead letter replacing a refused "
                        f"output record was refused too: check the topic's "
                        f"max.message.bytes)") from None
                outputs = self._replaced(outputs, refused, replacements)
                refused.clear()
        if offsets and self._on_acked is not None:
            self._on_acked([time.perf_counter() - fetched_at])

    def _transaction_once(self, outputs: Outputs, offsets: list[TopicPartition],
                          refused: list[Refused], retry: bool = False) -> None:
        producer = self.producer
        p = producer.producer

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                refused.append((msg.topic(), msg.key(), msg.value(), err))  # type: ignore[arg-type]

        def on_refused(topic: str, key: bytes | None, value: bytes, err: KafkaError) -> None:
            refused.append((topic, key, value, err))

        # 1. begin the batch's transaction;
        p.begin_transaction()
        try:
            # 2. produce every output of the batch (a record refused at once aborts it:
            #    it is replaced below);
            for topic, records in outputs:
                producer.produce_many(topic, records, delivered, _uncounted, on_refused)
            if refused:
                raise _Refused
            # 3. send the input offsets to the same transaction;
            if offsets:
                p.send_offsets_to_transaction(
                    offsets, self.consumer.consumer.consumer_group_metadata(), 30
                )
            # 4. commit it: flushes, and makes outputs and offsets visible together.
            p.commit_transaction(60)
            producer.outstanding = 0  # the commit flushed and acknowledged everything
            if refused:  # (a failed delivery fails the commit: defensive)
                raise _Refused
        except (KafkaException, _Refused) as exc:
            p.abort_transaction(30)
            p.poll(0)  # the delivery reports that failed it, if not served yet
            # (The abort purges what was still queued: those reports are no refusal.)
            refused[:] = [r for r in refused if r[3].code() not in _PURGED]
            other = next((r for r in refused if not is_content_error(r[3])), None)
            if refused and other is None and self.replacer is not None:
                raise _Refused from None
            if not refused and retry and isinstance(exc, KafkaException) and (
                    not exc.args[0].fatal()):
                # Right after a transaction aborted on a refused record, the producer may
                # still be bumping its epoch or resetting its sequence numbers ("erroneous
                # state", "skipped sequence numbers"): a moment later, the next goes through.
                raise _Refused from None
            if refused:
                topic, _, _, err = other or refused[0]
                raise DeliveryFailed(f"broker rejected an output record: {topic}: "
                                     f"{err.str()}") from None
            raise DeliveryFailed(f"transaction aborted: {exc}") from None

    def _replaced(self, outputs: Outputs, refused: list[Refused],
                  replacements: set[bytes]) -> Outputs:
        # The batch's outputs with each refused record replaced by its dead letter (a
        # refusal that is not about content stops the worker: it is retried by the
        # restart, not here).
        assert self.replacer is not None
        bad: set[tuple[str, bytes]] = set()
        extra: dict[str, list[tuple[bytes | None, bytes]]] = {}
        for r in refused:
            if r[2] in replacements:  # a dead letter refused with others: produced again
                continue
            rep = self.replacer(r)
            if rep is None:
                raise DeliveryFailed(f"broker rejected an output record: {r[0]}: "
                                     f"{r[3].str()}")
            bad.add((r[0], r[2]))
            replacements.add(rep[2])
            extra.setdefault(rep[0], []).append((rep[1], rep[2]))
        out: list[tuple[str, Sequence[tuple[bytes | None, bytes]]]] = [
            (topic, [kv for kv in records if (topic, kv[1]) not in bad])
            for topic, records in outputs]
        out += list(extra.items())
        return out

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

    def _replace_failed(self) -> None:
        # Records refused since the last look, each in its batch (which stays open until
        # they are dealt with). A refusal about content goes through these attempts, each
        # produced again in the same batch, alone in its request (AckedProducer.alone):
        #   0 -> the record again, unchanged: it may only have shared a broker batch with
        #        a record that was too large (the broker refuses the whole batch);
        #   1 -> its minimal dead letter (stream.kafka.rejects), counted;
        #   2 -> that dead letter again, for the same reason as 0;
        #   3 -> the batch fails: the dead-letter topic refuses a record of a few hundred
        #        bytes, a misconfiguration no restart would change.
        # Any other refusal (a timeout, a broker away) fails the batch at once: the worker
        # stops, the batch and later ones stay uncommitted and are re-read after the
        # restart.
        replacer, producer = self.replacer, self.producer
        for batch in self.window.with_failures():
            failed, batch.failed = batch.failed, []
            for topic, key, value, err, attempt in failed:
                content = replacer is not None and is_content_error(err)
                if not content or attempt >= 3:
                    if batch.error is None:
                        batch.error = f"{topic}: {err.str()}" + (
                            " (the dead letter replacing a refused output record was "
                            "refused too: check the topic's max.message.bytes)"
                            if content else "")
                    continue
                if attempt == 1:
                    assert replacer is not None
                    rep = replacer((topic, key, value, err))
                    assert rep is not None
                    topic, key, value = rep
                delivered, refused = batch.again(attempt + 1)
                n = producer.produce_many(topic, [(key, value)], delivered, batch.add, refused,
                                          alone=True)
                if batch.sealed:  # the window counted the batch's records when sealed
                    self.window.records += n

    def _settled(self) -> bool:
        self._replace_failed()
        return self.window.settled()

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
        self._replace_failed()
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
        if not window.wait(self.producer.poll_for, self._settled, self.ack_timeout_s):
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
        # 2. batches still in flight after a drain that timed out keep their outputs but
        #    lose these partitions' offsets: committed later, they would rewind the new
        #    owner (their events are re-read by it instead: duplicates, never loss);
        stale = self.window.forget(gone)
        if stale:
            log.warning("%d batches still in flight at revoke will not commit %s",
                        stale, ", ".join(f"{t}[{p}]" for t, p in sorted(gone)))
        # 3. revoked: commit those partitions' acknowledged offsets synchronously, so the
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


# Transactions tried for one batch before the worker stops: each replaces the records
# found refused in the one before (a handful at most) or waits out an epoch bump.
_ROUNDS = 8

# Delivery reports of records an aborted transaction purged: not refused by anyone.
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


class _Refused(Exception):
    """A transaction aborted because the broker refused some of its records."""


def _uncounted(n: int) -> None:
    # Transactions need no outstanding count: commit_transaction flushes everything.
    return
