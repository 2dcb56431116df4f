"""Idle-fetch backoff: keep a consumer from spinning on a broker that answers at once.

A Kafka broker holds a fetch that finds nothing for ``fetch.wait.max.ms``; noida-db (the
embedded broker of ``streamscore dev up`` and the demo) answers it at once, so
librdkafka's fetcher thread re-fetches in a tight loop whenever the consumer has caught
up (measured: ~40% CPU in the consumer and ~30% in the broker per idle consumer, which
starved Redis and the worker in ``make demo``). librdkafka has no setting that delays the
next fetch after an empty answer (``fetch.error.backoff.ms`` is for fetch errors,
``fetch.queue.backoff.ms`` for a full local queue; measured: no effect), so
``IdleFetch.consume`` paces the fetches itself with the consumer's own API:

1. when every assigned partition is at its end (its last fetch answer was the
   partition-EOF event, ``enable.partition.eof``, with no message after it) and no
   message came for ``idle_after_s``, a consume leaves the partitions paused: the
   fetcher stops asking. A backlog or a steady stream never gets there, so neither a
   drain nor live batches wait for fetches that would otherwise be prefetched;
2. the next consume waits until ``backoff_s`` after that pause (the caller's processing
   time counts; inside ``consume()``, so rebalance callbacks and errors are served),
   resumes the partitions and *wakes* their brokers' fetcher threads - librdkafka
   notices a resume only at the fetcher thread's next wake-up, up to 1 s later
   (measured: seconds of added latency without the wake) - by a watermark query of one
   resumed partition per leader broker (any request wakes that broker's thread; the
   call does not wait for the answer);
3. it waits for each resumed partition's first fetch answer: a message, or the EOF
   event (a resume bumps the partition's fetch version, which resets its EOF mark, so
   an answer that finds nothing reports EOF again);
4. it returns what came (maybe nothing) and pauses again if every partition is still
   at its end; data: consume normally until they are. An answer that does not come
   within the batch timeout (a loaded box, or a broker that holds empty fetches) leaves
   the partitions resumed, so data is never kept away by pausing before the broker
   answers; after ``MAX_SLOW`` such probes in a row the broker is taken to honour
   ``fetch.wait.max.ms`` and the backoff turns itself off (plain ``consume``; Tansu and
   Apache Kafka).

So once input has stopped (or is sparser than one message per ``idle_after_s``) the
consumer fetches about once per ``backoff_s`` instead of continuously, like a long poll
of at most ``backoff_s``: the first record after a gap waits at most ``backoff_s`` plus
one round trip longer to be fetched. Nothing is lost or reordered: a
pause drops only what librdkafka fetched and the application has not consumed, and the
next fetch starts at the application's position (librdkafka's pause semantics); offsets
and commits are not touched. ``backoff_s = 0`` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

__all__ = ["IDLE_AFTER_S", "MAX_SLOW", "REWAKE_S", "WAKE_WAIT_S", "IdleFetch", "is_eof"]

log = logging.getLogger(__name__)

# Unanswered probes in a row after which the broker is taken to hold empty fetches.
MAX_SLOW = 20
# A probe without an answer after this long wakes the fetcher threads again.
REWAKE_S = 0.002
# How long a wake-up call waits for its (unused) answer; the request goes out anyway.
WAKE_WAIT_S = 0.001
# No message for this long (and every partition at its end) before pausing.
IDLE_AFTER_S = 0.02

_EOF = KafkaError._PARTITION_EOF
Key = tuple[str, int]


def is_eof(m: Message) -> bool:
    """True for librdkafka's partition-EOF event (not an error, not a message)."""
    err = m.error()
    return err is not None and err.code() == _EOF


class IdleFetch:
    """``consume(n, timeout)`` for one consumer, pausing its partitions while idle.

    ``partitions()`` gives the partitions to pause (the consumer's assignment). The
    consumer must have ``enable.partition.eof`` on (``settings()`` adds it). Call
    ``assignment_changed()`` from the rebalance callbacks and ``forget()`` when
    something else resumed every partition (backpressure).
    """

    def __init__(self, consumer: Consumer, partitions: Callable[[], Iterable[Key]],
                 backoff_s: float, *, idle_after_s: float = IDLE_AFTER_S,
                 wake_timeout_s: float = 1.0) -> None:
        self.consumer = consumer
        self.partitions = partitions
        self.backoff_s = backoff_s
        self.idle_after_s = idle_after_s
        self._last_data = 0.0  # monotonic time of the last message seen
        self.wake_timeout_s = wake_timeout_s
        self._paused: list[TopicPartition] | None = None  # what we paused, if idle
        self._paused_at = 0.0  # monotonic time of that pause
        # Partitions whose last fetch answer was EOF, with no message since. Pausing
        # waits until every assigned partition is here, so each has answered a fetch:
        # pausing one that is still looking up its start offset makes librdkafka drop
        # the look-up's answer as outdated and leaves a retry timer that later resets
        # the position to auto.offset.reset (measured: partitions re-read from offset
        # 0 - duplicates and a 0.5 s stall).
        self._at_end: set[Key] = set()
        self.slow = 0  # probes in a row that got no answer within the batch timeout
        self._late: set[Key] = set()  # woken without answering: wake them again
        self._leaders: dict[Key, int] = {}  # partition -> leader broker id (metadata)
        self.pauses = 0  # idle pauses (a metric for tests and benchmarks)

    @staticmethod
    def settings(backoff_s: float) -> dict[str, Any]:
        """librdkafka settings the backoff needs (none when it is off)."""
        return {"enable.partition.eof": True} if backoff_s > 0 else {}

    @property
    def idle(self) -> bool:
        """True while the partitions are paused by the backoff."""
        return self._paused is not None

    def consume(self, n: int, timeout_s: float) -> list[Message]:
        """Up to ``n`` messages and errors; may include partition-EOF events (skip them)."""
        c = self.consumer
        if self.backoff_s <= 0:
            return c.consume(num_messages=n, timeout=timeout_s)
        if self._paused is None:
            if self._late:  # a wake that may have come before librdkafka saw the resume
                late, self._late = self._late, set()
                self.wake(late, every=True)
            got = c.consume(num_messages=n, timeout=timeout_s)
            if len(got) >= n:  # a full batch (a backlog): no bookkeeping per message
                self._at_end.clear()
                self._last_data = time.monotonic()
                return got
            got = self._seen(got)
            if self._paused is None and self._idle_now():  # (a callback may have paused)
                self._pause()
            return got
        # Paused: wait out the rest of the backoff (rebalance callbacks run in here).
        wait = self._paused_at + self.backoff_s - time.monotonic()
        got = self._seen(c.consume(num_messages=n, timeout=max(wait, 0.0)))
        if got or self._paused is None:
            # Data from a partition nobody paused (not answered yet, newly assigned, or
            # resumed by the backpressure), or a callback resumed them: go on normally.
            self.release()
            return got
        return self._probe(n, timeout_s)

    def _probe(self, n: int, timeout_s: float) -> list[Message]:
        # Resume, wake, and wait (up to the batch timeout) for every resumed partition's
        # first answer; pause again unless data filled the batch.
        c = self.consumer
        pending = self._resume_and_wake()
        got: list[Message] = []
        now = time.monotonic()
        deadline = now + max(timeout_s, 0.001)
        rewake = now + REWAKE_S
        while pending:
            now = time.monotonic()
            if now >= deadline:
                break
            m = c.poll(min(deadline, rewake) - now)
            if m is None:
                if time.monotonic() >= rewake:
                    # The wake can reach the fetcher thread before librdkafka's main
                    # thread has applied the resume: wake again.
                    self.wake(pending, every=True)
                    rewake = time.monotonic() + REWAKE_S
                continue
            key: Key = (m.topic(), m.partition())  # type: ignore[assignment]
            pending.discard(key)
            got.extend(self._seen([m]))
            if m.error() is None:  # data: take what else has arrived, answers included
                got.extend(self._seen(c.consume(num_messages=max(n - len(got), 1), timeout=0)))
                pending.clear()
        if pending and not got:
            # No answer in time: stay resumed (never pause a fetch that may carry data
            # again and again) and wake these again before the next consume. Many in a
            # row: the broker holds empty fetches itself; the backoff is not needed.
            self._late |= pending
            self.slow += 1
            if self.slow >= MAX_SLOW:
                log.info("idle backoff off: %d fetches in a row found nothing and were not "
                         "answered within %.0f ms (the broker honours fetch.wait.max.ms)",
                         self.slow, 1e3 * timeout_s)
                self.backoff_s = 0.0
            return got
        self.slow = 0
        if self._idle_now():
            self._pause()
        return got

    def release(self) -> None:
        """Resume what the backoff paused (still assigned at this point) and forget it."""
        parts, self._paused = self._paused, None
        if parts:
            with contextlib.suppress(KafkaException):  # e.g. lost already: nothing to resume
                self.consumer.resume(parts)
                self.wake((tp.topic, tp.partition) for tp in parts)

    def forget(self) -> None:
        """Drop the idle state without resuming: something else resumed everything."""
        self._paused = None

    def assignment_changed(self) -> None:
        """Partitions came or went: resume, and learn leaders and answers anew."""
        self.release()
        self._leaders.clear()
        self._late.clear()
        self._at_end.clear()
        self.slow = 0

    def _seen(self, msgs: list[Message]) -> list[Message]:
        # Drop EOF events; note which partitions are at their end.
        out = []
        at_end = self._at_end
        data = False
        for m in msgs:
            key: Key = (m.topic(), m.partition())  # type: ignore[assignment]
            err = m.error()
            if err is None:
                at_end.discard(key)
                out.append(m)
                data = True
            elif err.code() == _EOF:
                at_end.add(key)
            else:
                out.append(m)
        if data:
            self._last_data = time.monotonic()
        return out

    def _idle_now(self) -> bool:
        # Every partition at its end, and no message for idle_after_s: pausing between
        # the batches of a steady stream cost the worker latency (every batch then
        # waited for a fresh fetch instead of finding it prefetched).
        if time.monotonic() - self._last_data < self.idle_after_s:
            return False
        assigned = set(self.partitions())
        return bool(assigned) and assigned <= self._at_end

    def _pause(self) -> None:
        # Called only when every assigned partition is at its end (see _at_end).
        parts = [TopicPartition(t, p) for t, p in self.partitions()]
        if not parts:
            return
        self.consumer.pause(parts)
        self._paused = parts
        self._paused_at = time.monotonic()
        self.pauses += 1

    def _resume_and_wake(self) -> set[Key]:
        parts, self._paused = self._paused or [], None
        if not parts:
            return set()
        self.consumer.resume(parts)
        keys = [(tp.topic, tp.partition) for tp in parts]
        self.wake(keys)
        return set(keys)

    def wake(self, keys: Iterable[Key], *, every: bool = False) -> None:
        """Make librdkafka's fetcher threads notice resumed partitions now, not in ~1 s.

        Any request to a broker wakes its thread: a watermark query of one partition
        per leader broker (``every``: of each partition). The request wakes the fetcher
        as soon as it is queued; its answer is not needed and can take long on a loaded
        box (measured at load 9: p99 18 ms, max 343 ms), so the call gives up after
        ``WAKE_WAIT_S`` (the request still goes out). (Another thread cannot make the
        call: a second thread's call on the consumer waits for the loop's consume.)
        """
        keys = list(keys)
        leaders = self._leader_map(keys)
        woken: set[int] = set()
        c = self.consumer
        for key in keys:
            leader = leaders.get(key, -1)
            if leader in woken and not every:
                continue
            woken.add(leader)
            with contextlib.suppress(KafkaException):
                c.get_watermark_offsets(TopicPartition(*key), timeout=WAKE_WAIT_S, cached=False)

    def _leader_map(self, keys: list[Key]) -> dict[Key, int]:
        leaders = self._leaders
        missing = [k for k in keys if k not in leaders]
        for topic in {t for t, _ in missing}:
            try:
                meta = self.consumer.list_topics(topic, timeout=self.wake_timeout_s)
            except KafkaException:
                continue
            tmeta = meta.topics.get(topic)
            if tmeta is not None:
                for pid, pm in tmeta.partitions.items():
                    leaders[(topic, pid)] = pm.leader
        return leaders

    def close(self) -> None:
        """Nothing runs in the background; kept so callers close it with the consumer."""
