"""Thin confluent-kafka wrappers: batch consumer and acked producer.

- ``BatchConsumer``: manual offsets (``enable.auto.commit`` and
  ``enable.auto.offset.store`` off), cooperative-sticky assignment, ``consume(n, t)``
  micro-batches (paused once input has stopped: ``stream.kafka.idle``), the next offset to
  commit per partition, lag from cached watermarks. When partitions leave it hands them
  to its ``on_leaving`` hook (the commit owner), else it only hands them back.
- ``AckedProducer``: idempotent producer; counts outstanding deliveries with the delivery
  callback, turns ``BufferError`` (queue full) into backpressure: pause the consumer,
  serve delivery reports until the queue is below the low watermark, resume (hysteresis,
  so it does not flap), and remembers the first delivery error.

When offsets are committed, in both delivery modes, is decided in one place:
``stream.kafka.commit.CommitOwner``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas.errors import InfrastructureError
from stream.kafka.idle import IdleFetch

__all__ = [
    "ACK_TIMEOUT_S",
    "AckedProducer",
    "BatchConsumer",
    "DeliveryFailed",
    "next_offsets",
    "offsets_of",
]

log = logging.getLogger(__name__)

# The longest wait for the broker's acknowledgements of what is in flight (per batch in
# exactly-once mode; the whole in-flight window in the worker's pipelined mode, also on
# SIGTERM): deploy/ sizes the pod's termination grace period from it.
ACK_TIMEOUT_S = 60.0


class DeliveryFailed(InfrastructureError):
    """The broker did not acknowledge an output record: the batch is not committed."""


def next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """Per partition, the offset after the last message: what to commit for the batch."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key: tuple[str, int] = (m.topic(), m.partition())  # type: ignore[assignment]
        off: int = m.offset()  # type: ignore[assignment]
        if off > last.get(key, -1):
            last[key] = off
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def offsets_of(sources: Sequence[tuple[str, int, int]]) -> list[TopicPartition]:
    """Like ``next_offsets`` from the (topic, partition, offset) the worker already read."""
    # A partition's messages come in offset order within a consume() batch, so the
    # last one seen per partition is the highest (one dict pass, no per-message branch).
    last = {(t, p): o for t, p, o in sources}
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


class BatchConsumer:
    """A consumer in a group, reading micro-batches and committing explicitly."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        settings: Mapping[str, Any] | None = None,
        *,
        read_committed: bool = False,
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        on_leaving: Callable[[set[tuple[str, int]], bool], None] | None = None,
        idle_backoff_s: float = 0.0,
    ) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            "fetch.wait.max.ms": 10,
            "log_level": 3,
            # librdkafka retries a refused login for ever, quietly: surface it instead.
            "error_cb": self._on_error,
            **IdleFetch.settings(idle_backoff_s),
        }
        conf.update(settings or {})
        self._failed = ""  # why the run must stop: a refused login or a fatal error
        self._on_assign, self._on_revoke = on_assign, on_revoke
        # Called with (partitions, lost) when partitions go, inside consume(): the commit
        # owner's revoke order (stream.kafka.commit); without one, hand_back only.
        self._on_leaving = on_leaving
        try:
            self.consumer = Consumer(conf)
        except KafkaException as exc:
            raise InfrastructureError(f"cannot create Kafka consumer: {exc}") from None
        self.assignment: set[tuple[str, int]] = set()
        self.paused = False
        self.commit_failures = 0  # synchronous commits refused (revoke, close)
        # Next offsets whose outputs are acknowledged, per partition: committed
        # asynchronously after every batch, synchronously on revoke and on close.
        self._acked: dict[tuple[str, int], int] = {}
        # Between empty consumes the partitions are paused for idle_backoff_s (0: off):
        # a broker that answers empty fetches at once (noida-db) is not spun.
        self.idle = IdleFetch(self.consumer, lambda: self.assignment, idle_backoff_s)
        self.consumer.subscribe(list(topics), on_assign=self._assigned, on_revoke=self._revoked,
                                on_lost=self._lost)

    def _on_error(self, err: KafkaError) -> None:
        # Runs inside consume(). A wrong password or a missing SASL user never heals by
        # retrying: the next consume() stops the run with librdkafka's own words (which
        # name the mechanism and the broker, never the password).
        if err.code() == KafkaError._AUTHENTICATION:
            self._failed = f"Kafka refused the login: {err.str()}"
        elif err.fatal():
            self._failed = f"Kafka consumer failed: {err.str()}"
        else:
            log.warning("consumer: %s", err.str())

    def _assigned(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self.idle.assignment_changed()  # the idle pause covers the old assignment only
        self.assignment |= {(p.topic, p.partition) for p in parts}
        if self.paused and parts:
            consumer.pause(parts)  # newly assigned partitions join the paused state
        if self._on_assign:
            self._on_assign(parts)

    def _revoked(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self._leave(parts, lost=False)

    def _lost(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Lost, not revoked: we are no longer a member, so a commit would be refused.
        self._leave(parts, lost=True)

    def _leave(self, parts: list[TopicPartition], *, lost: bool) -> None:
        # Runs inside consume(). (Idle-paused partitions are resumed first: a pause
        # outlives the assignment.)
        self.idle.assignment_changed()
        gone = {(p.topic, p.partition) for p in parts}
        if self._on_leaving is not None:
            self._on_leaving(gone, lost)
        else:
            self.hand_back(gone, lost=lost)
        self.assignment -= gone
        if self._on_revoke:
            self._on_revoke(parts)

    def hand_back(self, partitions: set[tuple[str, int]], *, lost: bool = False) -> None:
        """Commit these partitions' acknowledged offsets synchronously (not when lost: no
        longer a member), then forget them: their next owner commits them from now on."""
        if not lost:
            self._commit_acked(partitions)
        for key in partitions:
            self._acked.pop(key, None)

    def consume(self, n: int, timeout_s: float) -> list[Message]:
        """Up to ``n`` messages with values; errors other than partition EOF raise."""
        msgs = self.idle.consume(n, timeout_s)
        if self._failed:
            raise InfrastructureError(self._failed)
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise InfrastructureError(f"Kafka consumer failed: {err.str()}")
            else:
                log.warning("consumer: %s", err.str())
        return out

    def commit(self, offsets: list[TopicPartition], *, asynchronous: bool = True) -> None:
        """Commit next-offsets whose outputs are all acknowledged.

        Asynchronous by default: the commit request is queued behind the acks it depends
        on, and a crash before it lands only re-delivers (duplicates, never loss); the
        synchronous round trip per batch would cap the batch rate at the broker's latency.
        """
        if not offsets:
            return
        for tp in offsets:
            self._acked[(tp.topic, tp.partition)] = tp.offset
        if asynchronous:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:
                # Refused at once (e.g. the partitions were just lost): the events are
                # re-delivered to their next owner; a failed commit never stops scoring.
                log.warning("commit not sent (events will be re-delivered): %s", exc)
        else:
            self.consumer.commit(offsets=offsets, asynchronous=False)

    def _commit_acked(self, partitions: set[tuple[str, int]] | None = None) -> None:
        todo = [TopicPartition(t, p, o) for (t, p), o in self._acked.items()
                if partitions is None or (t, p) in partitions]
        if todo:
            try:
                self.consumer.commit(offsets=todo, asynchronous=False)
            except KafkaException as exc:  # e.g. no longer a member: the next owner re-reads
                # (noida-db also refuses a commit made inside the revoke callback with
                # ILLEGAL_GENERATION: the batches finished there are re-delivered.)
                self.commit_failures += 1
                log.warning("final commit failed (events will be re-delivered): %s", exc)

    def pause(self) -> None:
        if not self.paused:
            self.idle.forget()  # paused below as well; resume() resumes everything
            parts = [TopicPartition(t, p) for t, p in self.assignment]
            if parts:
                self.consumer.pause(parts)
            self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.idle.forget()
            parts = [TopicPartition(t, p) for t, p in self.assignment]
            if parts:
                self.consumer.resume(parts)
                self.idle.wake(self.assignment)  # else fetching restarts up to 1 s later
            self.paused = False

    def lag(self) -> dict[tuple[str, int], int]:
        """High watermark minus position per assigned partition (cached, no round trip)."""
        parts = [TopicPartition(t, p) for t, p in sorted(self.assignment)]
        if not parts:
            return {}
        out = {}
        try:
            positions = self.consumer.position(parts)
        except KafkaException:
            return {}
        for tp in positions:
            try:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0 and tp.offset >= 0:
                out[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        return out

    def acked_partitions(self) -> set[tuple[str, int]]:
        """Partitions whose acknowledged offsets this consumer would still commit."""
        return set(self._acked)

    def close(self) -> None:
        """Commit what is acknowledged (synchronously), then leave the group."""
        self._commit_acked()
        self.idle.close()
        self.consumer.close()


class AckedProducer:
    """An idempotent producer that knows when everything it sent is acknowledged."""

    def __init__(
        self,
        bootstrap: str,
        settings: Mapping[str, Any] | None = None,
        *,
        transactional_id: str | None = None,
        on_backpressure: Callable[[bool], None] | None = None,
        low_watermark: float = 0.5,
    ) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "batch.num.messages": 10000,
            # Decision records are ~0.8 KB of JSON (~4x smaller compressed): lz4 cuts the
            # network and disk of a real cluster at no measurable worker CPU (null drain,
            # benchmarks/null_drain.py: 5.5-9.1 us/event with lz4, 6.2-12.7 without;
            # zstd 5.8-11.0 and slower drains). Pipeline files can override it.
            "compression.type": "lz4",
            "log_level": 3,
        }
        if transactional_id:
            conf["transactional.id"] = transactional_id
        conf.update(settings or {})
        self._conf = conf
        self._alone: Producer | None = None  # see alone(), created on first use
        self.queue_max = int(conf.get("queue.buffering.max.messages", 100_000))
        self.low = int(self.queue_max * low_watermark)
        try:
            self.producer = Producer(conf)
        except KafkaException as exc:
            raise InfrastructureError(f"cannot create Kafka producer: {exc}") from None
        self.transactional = bool(transactional_id)
        if self.transactional:
            self.producer.init_transactions(30)
        self.outstanding = 0
        self.error: str | None = None
        self._on_backpressure = on_backpressure
        self.pauses = 0
        self.drain_timeout_s = ACK_TIMEOUT_S  # the longest wait for the queue to drain
        # Called when a wait served delivery reports: waiting on acks that arrive is
        # progress (the worker's liveness), waiting on none is not.
        self.on_progress: Callable[[], None] | None = None

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        self.outstanding -= 1
        if err is not None and self.error is None:
            self.error = f"{msg.topic()}: {err.str()}"

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one record; when the queue is full, pause input and drain to the low mark."""
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self._delivered)
                self.outstanding += 1
                return
            except BufferError:
                self._drain_to_low()

    def _drain_to_low(self) -> None:
        # Hysteresis: stay paused until the queue is at the low watermark, not just one
        # slot below full, so consumption does not flap on every record.
        self.pauses += 1
        if self._on_backpressure:
            self._on_backpressure(True)
        deadline = time.monotonic() + self.drain_timeout_s
        try:
            # Bounded: acks that stop coming (a broker away) must not hold the loop for
            # message.timeout.ms; the loop then stops with one line and restarts.
            while len(self.producer) > self.low:
                if time.monotonic() > deadline:
                    raise DeliveryFailed(
                        f"producer queue still above {self.low} records after "
                        f"{self.drain_timeout_s:g} s: the broker does not acknowledge")
                self.poll_for(0.05)
        finally:
            if self._on_backpressure:
                self._on_backpressure(False)

    def produce_many(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes]],
        on_delivery: Callable[[Any, Any], None] | None = None,
        count: Callable[[int], None] | None = None,
        refused: Callable[[str, bytes | None, bytes, KafkaError], None] | None = None,
        *,
        alone: bool = False,
    ) -> int:
        """Queue records; returns how many.

        With ``on_delivery`` (a batch's own callback, ``stream.kafka.inflight``) the records are
        counted by ``count`` - called before any delivery report can be served - instead
        of this producer's ``outstanding``. A record ``produce()`` refuses at once (too
        large for ``message.max.bytes``, ...) goes to ``refused`` and is not counted;
        without ``refused`` it raises ``DeliveryFailed``. ``alone``: through ``alone()``.
        """
        produce = (self.alone() if alone else self.producer).produce
        cb = on_delivery or self._delivered
        add = count or self._add_outstanding
        n = total = 0
        for key, value in records:
            try:
                try:
                    produce(topic, value, key, on_delivery=cb)
                except BufferError:
                    add(n)  # the drain below serves delivery reports of these
                    total += n
                    n = 0
                    self._drain_to_low()
                    produce(topic, value, key, on_delivery=cb)
            except KafkaException as exc:
                err = exc.args[0]
                if refused is None:
                    raise DeliveryFailed(f"the producer refused a record for {topic}: "
                                         f"{err.str()}") from None
                refused(topic, key, value, err)
                continue
            n += 1
        add(n)
        return total + n

    def _add_outstanding(self, n: int) -> None:
        self.outstanding += n

    def alone(self) -> Producer:
        """A second producer sending each record in a request of its own (for records
        produced again after a refusal).

        The broker refuses a whole batch when one record in it is too large, so a record
        produced again on the main producer may share a batch with another refused one
        and be refused with it. Not transactional: exactly-once retries its transaction.
        """
        if self._alone is None:
            conf = {key: value for key, value in self._conf.items()
                    if key not in ("transactional.id", "enable.idempotence")}
            self._alone = Producer({**conf, "linger.ms": 0, "batch.num.messages": 1,
                                    "max.in.flight.requests.per.connection": 1})
        return self._alone

    def poll_for(self, timeout_s: float) -> int:
        """Serve delivery reports for up to ``timeout_s`` (any served is progress)."""
        n = self.producer.poll(timeout_s)
        if self._alone is not None:
            n += self._alone.poll(0)
        if n and self.on_progress is not None:
            self.on_progress()
        return n

    def poll(self) -> None:
        self.producer.poll(0)
        if self._alone is not None:
            self._alone.poll(0)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush, then drop the clients so their connections close now, not at GC time."""
        if self._alone is not None:
            self._alone.flush(timeout_s)
            self._alone = None
        self.producer.flush(timeout_s)
        del self.producer
