"""The Kafka side of ``streamscore outcomes``: decisions and outcomes topics in, metric
records out (topic, JSONL file, Prometheus), in a process of its own beside the workers.

Reading is by assignment, not by a consumer group: the join state
(``stream.drift.outcome_stream.OutcomeStream``) lives in memory, so on start it is rebuilt
by replaying both topics from ``now - replay_seconds`` (``offsets_for_times``; default the
join horizon) and nothing needs committing. One such process serves a pipeline (it reads
every partition of both topics).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from schemas.errors import InfrastructureError, StreamscoreError
from schemas.outcomes import OutcomeMetricsRecord, encode_metrics
from stream.drift.outcome_stream import OutcomeMetricsExporter, OutcomeStream
from stream.drift.outcomes import OutcomeConfig, OutcomeJoiner

__all__ = ["OutcomeService"]


class OutcomeService:
    """Consume decisions and outcomes, join them, publish metrics every ``interval``."""

    def __init__(self, *, pipeline: str, bootstrap: str, decisions_topic: str,
                 outcomes_topic: str, metrics_topic: str | None, config: OutcomeConfig,
                 settings: Mapping[str, Any] | None = None, jsonl: str | Path | None = None,
                 exporter: OutcomeMetricsExporter | None = None, interval: float = 10.0,
                 replay_seconds: float | None = None, early_seconds: float = 60.0,
                 max_early: int = 100_000) -> None:
        from confluent_kafka import Consumer, Producer

        self.stream = OutcomeStream(pipeline, config, early_seconds, max_early)
        self.decisions_topic, self.outcomes_topic = decisions_topic, outcomes_topic
        self.metrics_topic = metrics_topic
        self.jsonl = Path(jsonl) if jsonl else None
        self.exporter = exporter
        self.interval = interval
        self.replay_seconds = (config.horizon_seconds if replay_seconds is None
                               else replay_seconds)
        base = dict(settings or {})
        self._consumer = Consumer({**base, "bootstrap.servers": bootstrap,
                                   "group.id": f"streamscore-outcomes-{pipeline}",
                                   "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest"})
        self._producer = (Producer({**base, "bootstrap.servers": bootstrap})
                          if metrics_topic else None)
        self._last_publish = 0.0

    @property
    def joiner(self) -> OutcomeJoiner:
        return self.stream.joiner

    @property
    def invalid(self) -> int:
        return self.stream.invalid

    def assign(self, timeout: float = 10.0) -> None:
        """Assign every partition of both topics from ``now - replay_seconds``."""
        from confluent_kafka import KafkaException, TopicPartition

        since_ms = int((time.time() - self.replay_seconds) * 1000)
        parts = []
        for topic in (self.decisions_topic, self.outcomes_topic):
            try:
                info = self._consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            except KafkaException as exc:
                raise InfrastructureError(f"cannot reach Kafka: {exc}") from None
            if info is None or info.error is not None or not info.partitions:
                raise StreamscoreError(f"topic {topic!r} does not exist")
            parts += [TopicPartition(topic, p, since_ms) for p in sorted(info.partitions)]
        found = self._consumer.offsets_for_times(parts, timeout=timeout)
        # No record at or after the time (offset -1): start at the end of the partition.
        self._consumer.assign([TopicPartition(tp.topic, tp.partition,
                                              tp.offset if tp.offset >= 0 else -1)
                               for tp in found])

    def poll(self, timeout: float = 0.5, max_messages: int = 5000) -> int:
        """One cycle: read, join, publish when due. Returns the messages read."""
        msgs = self._consumer.consume(num_messages=max_messages, timeout=timeout)
        good = [m for m in msgs if not m.error()]
        self.stream.feed([m.value() or b"" for m in good if m.topic() == self.decisions_topic],
                         [m.value() or b"" for m in good if m.topic() == self.outcomes_topic],
                         time.monotonic())
        if time.monotonic() - self._last_publish >= self.interval:
            self.publish()
        return len(msgs)

    def drain(self) -> None:
        """Join the outcomes still waiting for their decision (the end of a replay)."""
        self.stream.drain()

    def publish(self) -> list[OutcomeMetricsRecord]:
        """Compute, publish and export the metrics now."""
        self._last_publish = time.monotonic()
        at = time.time()
        records = self.stream.records(at)
        blobs = [encode_metrics(r) for r in records]
        if self._producer is not None and self.metrics_topic:
            for r, b in zip(records, blobs, strict=True):
                self._producer.produce(self.metrics_topic, b, key=r.model_version.encode())
            self._producer.flush(10.0)
        if self.jsonl is not None and blobs:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with self.jsonl.open("ab") as fh:
                fh.write(b"".join(b + b"\n" for b in blobs))
        if self.exporter is not None:
            self.exporter.update(records, self.stream.counts(), at)
        return records

    def close(self) -> None:
        self._consumer.close()
        if self._producer is not None:
            self._producer.flush(10.0)
