"""The scoring worker: build every stage once, then loop consume -> process -> produce -> commit.

``Worker(config, ...)`` resolves the infrastructure (Kafka bootstrap, Redis), loads and
compiles the model from the registry, plans the feature matrix, opens the consumer and
producer, the drift monitor and the metrics/health server. ``run()`` then only calls
what was prebuilt, one micro-batch at a time:

    consume up to N -> commit the acknowledged prefix of earlier batches
      -> the per-batch step (``stream.step``, shared with the Faust app): BatchCore.process
         (decode/validate, enrich, score, decide) -> drift windows -> velocity update
         (in Redis, in the background)
      -> produce decisions + dead letters + drift records (not waiting for their acks)

When offsets are committed is decided by one owner, ``stream.kafka.commit.CommitOwner``:
acknowledgement is pipelined (a batch's offsets are committed once its outputs and those
of every earlier batch are acknowledged, while later batches are already being scored;
a delivery failure stops the worker with that batch and later ones uncommitted), or one
Kafka transaction per batch in exactly-once mode. Rebalance callbacks run inside
``consume()``: on revoke the owner first waits for every batch in flight, commits, and
only then lets the partitions go. ``request_stop()`` (SIGTERM/SIGINT in the CLI) ends the
loop after the current batch; the worker then publishes the last drift window and the
owner waits for acks, commits and closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from stream.config import PipelineConfig
from stream.core.assembly import build_stages, load_model
from stream.kafka.clients import (
    ACK_TIMEOUT_S,
    AckedProducer,
    BatchConsumer,
    DeliveryFailed,
    offsets_of,
)
from stream.kafka.commit import CommitOwner
from stream.kafka.inflight import InFlight
from stream.kafka.rejects import Replacer
from stream.metrics import HealthServer, WorkerMetrics
from stream.step import BatchStep

__all__ = ["INSTANCE_ENV", "Worker", "WorkerStats", "default_instance_id", "load_model"]

log = logging.getLogger(__name__)

# The environment variable naming this worker instance (a pod name, a StatefulSet
# ordinal): stable across restarts of the same instance, distinct between instances.
INSTANCE_ENV = "STREAMSCORE_INSTANCE_ID"


def default_instance_id() -> str:
    """``$STREAMSCORE_INSTANCE_ID``, else the host name (a container restarted in its pod
    keeps it; a process id would not survive the restart)."""
    return os.environ.get(INSTANCE_ENV, "").strip() or socket.gethostname()


@dataclass
class WorkerStats:
    """Counts of one run (also in the Prometheus metrics)."""

    batches: int = 0
    events: int = 0
    decisions: int = 0
    dead_letters: int = 0
    degraded: int = 0
    drift_records: int = 0
    reloads: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    busy_s: float = 0.0  # first input consumed -> last batch acknowledged
    cpu_s: float = 0.0  # process CPU time (all threads, librdkafka's too) over busy_s
    # The loop's own thread: the per-core ceiling when librdkafka's and the velocity
    # threads get another core (a broker on other machines); cpu_s counts them all.
    main_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        """Events per second while there was input."""
        return self.events / self.busy_s if self.busy_s > 0 else 0.0


class Worker:
    """One consumer-group member scoring one pipeline."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        bootstrap: str | None = None,
        redis_url: str | None = None,
        registry_root: str | None = None,
        worker_id: str | None = None,
        metrics_port: int | None = None,
        client_settings: dict[str, Any] | None = None,
        consumer_settings: dict[str, Any] | None = None,
        exactly_once: bool | None = None,
        batch_max: int | None = None,
        max_inflight_batches: int = 16,
        max_inflight_records: int | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        idle_backoff_ms: float | None = None,
        instance_id: str | None = None,
    ) -> None:
        from stream.endpoints import resolve_bootstrap

        self.config = c = config
        self.bootstrap = bootstrap or resolve_bootstrap(c.kafka.bootstrap_servers)
        self.exactly_once = c.kafka.exactly_once if exactly_once is None else exactly_once
        self._stop = threading.Event()
        self.stats = WorkerStats()

        # Everything between input bytes and output records (model from the registry,
        # online reader, request features, the batch core, velocity updates) is built the
        # same way for the Faust app: see stream.core.assembly.
        self.stages = st = build_stages(c, redis_url=redis_url, registry_root=registry_root,
                                        worker_id=worker_id)
        self.worker_id, self.redis_url = st.worker_id, st.redis_url
        self.registry, self.watcher, self.reader = st.registry, st.watcher, st.reader
        self.core, self.velocity = st.core, st.velocity
        model = st.model

        self.metrics = WorkerMetrics(c.name)
        # One batch between consume and publish, hot reload and drift windows: the same
        # step object shape as the Faust app's (velocity updates in the background here).
        self.step = BatchStep(c, st, self.metrics, background_velocity=True)

        # Kafka clients last: nothing above may fail after we joined the group.
        settings = {**(client_settings or {}), **c.kafka.settings}
        if idle_backoff_ms is None:  # the pipeline's, unless the environment says (A/B runs)
            env = os.environ.get("STREAMSCORE_IDLE_BACKOFF_MS", "").strip()
            idle_backoff_ms = float(env) if env else c.batch.idle_backoff_ms
        self.consumer = BatchConsumer(
            self.bootstrap, c.kafka.group_id or f"streamscore-{c.name}", [c.topics.input],
            {**settings, **c.kafka.consumer, **(consumer_settings or {})},
            read_committed=self.exactly_once,
            on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_leaving=lambda gone, lost: self.commits.revoke(gone, lost),
            idle_backoff_s=max(idle_backoff_ms, 0.0) / 1000.0,
        )
        group = c.kafka.group_id or f"streamscore-{c.name}"
        self.instance_id = instance_id or default_instance_id()
        # Exactly-once: the transactional id is the same for this instance across restarts,
        # so a worker restarted after a crash fences its predecessor's open transaction at
        # once (init_transactions aborts it) instead of leaving read_committed readers
        # stalled behind it until transaction.timeout.ms.
        self.transactional_id = (f"streamscore-{group}-{self.instance_id}"
                                 if self.exactly_once else None)
        self.producer = AckedProducer(
            self.bootstrap, {**settings, **c.kafka.producer},
            transactional_id=self.transactional_id,
            on_backpressure=self._backpressure,
        )
        self.metrics.subscribed = True
        port = c.metrics.port if metrics_port is None else metrics_port
        self.http = HealthServer(self.metrics, c.metrics.host, port).start() if port >= 0 else None
        self.batch_max = batch_max or c.batch.max_messages
        self.batch_n = self.batch_max if not c.batch.adaptive else min(self.batch_max, 64)
        # Batches produced but not yet acknowledged: bounded, so a slow broker pauses
        # input instead of growing memory (default: 16 batches or 8 full ones' records;
        # max_inflight_batches=1 is the former wait-for-every-batch loop).
        self.inflight = InFlight(max_inflight_batches,
                                 max_inflight_records or max(8 * self.batch_max, 8192))
        # The one owner of produce -> acknowledgement -> commit, revoke and shutdown order.
        # A record the broker refuses for its content is replaced by a minimal dead letter
        # (counted), never a stop that would come back after every restart.
        replacer = Replacer(c.name, c.topics.dead_letter, self.worker_id,
                            on_refused=self.metrics.output_refused)
        self.commits = CommitOwner(self.producer, self.consumer, exactly_once=self.exactly_once,
                                   window=self.inflight, ack_timeout_s=ack_timeout_s,
                                   on_acked=self._acked, replacer=replacer)
        self.producer.on_progress = self.metrics.beat  # acks arriving are progress
        # first input: perf_counter, process CPU, this (the loop's) thread's CPU
        self._first: tuple[float, float, float] | None = None
        log.info("worker %s ready: pipeline %s, model %s, input %s on %s", self.worker_id,
                 c.name, model.label, c.topics.input, self.bootstrap)
        log.debug("pipeline config (secrets redacted): %s", c.redacted())

    # ---- helpers -----------------------------------------------------------------------

    def _backpressure(self, paused: bool) -> None:
        if paused:
            self.metrics.backpressure.labels(self.config.name).inc()
            self.consumer.pause()
        else:
            self.consumer.resume()

    def _on_assign(self, parts: list[Any]) -> None:
        log.info("assigned %s", _parts(parts))
        self.metrics.assigned.labels(self.config.name).set(len(self.consumer.assignment))

    def _on_revoke(self, parts: list[Any]) -> None:
        log.info("revoked %s", _parts(parts))
        self.metrics.forget_partitions([(p.topic, p.partition) for p in parts])
        self.metrics.assigned.labels(self.config.name).set(len(self.consumer.assignment))

    def request_stop(self) -> None:
        """Finish the current batch, wait for the acks of all in flight, then shut down."""
        self._stop.set()

    @property
    def port(self) -> int | None:
        return self.http.port if self.http else None

    def _maybe_reload(self) -> None:
        """Follow the champion's and the challenger's aliases (each swaps between batches)."""
        if self.step.reload():
            self.stats.reloads += 1

    # ---- the loop ----------------------------------------------------------------------

    def run(self, *, idle_exit_s: float | None = None) -> WorkerStats:
        """Consume until ``request_stop()`` (or ``idle_exit_s`` without input)."""
        c = self.config
        consume = self.consumer.consume
        step = self.step
        topic_in = c.topics.input  # the only subscribed topic: no m.topic() per message
        commit_batch, settle = self.commits.commit_batch, self.commits.settle
        timeout_s = c.batch.timeout_ms / 1000.0
        reload_every = c.model.reload_check_s
        next_reload = time.monotonic() + reload_every
        next_lag = time.monotonic() + 5.0
        last_input = time.monotonic()
        try:
            while not self._stop.is_set():
                self.metrics.beat()
                msgs = consume(self.batch_n, timeout_s)
                t_fetch = time.perf_counter()
                settle()  # serve the acks that arrived meanwhile, commit the acked prefix
                now_m = time.monotonic()
                if now_m >= next_reload:
                    self._maybe_reload()
                    next_reload = now_m + reload_every
                if now_m >= next_lag:
                    self.metrics.set_lag(self.consumer.lag())
                    self.metrics.assigned.labels(c.name).set(len(self.consumer.assignment))
                    next_lag = now_m + 5.0
                if not msgs:
                    self.producer.poll()
                    self._publish_drift(step.tick())
                    if not self.consumer.assignment:
                        last_input = now_m  # idle means "assigned and nothing to read"
                    elif idle_exit_s is not None and now_m - last_input > idle_exit_s:
                        break
                    continue
                last_input = now_m
                if self._first is None:
                    self._first = (t_fetch, time.process_time(), time.thread_time())
                payloads = [m.value() for m in msgs]
                keys = [m.key() for m in msgs]
                sources: list[Any] = [(topic_in, m.partition(), m.offset()) for m in msgs]
                stamps = [m.timestamp()[1] / 1000.0 for m in msgs]
                res, outputs = step.run(payloads, keys, sources, stamps)
                n_drift = len(outputs[-1][1])
                commit_batch(outputs, offsets_of(sources), t_fetch)
                self.metrics.observe_batch(res)
                self._count(res, n_drift)
                self._adapt(len(msgs))
                step.accept(res)  # a dead-letter flood raises once its outputs are out
        finally:
            step.close()  # the velocity update in flight lands first
            self._shutdown()
        return self.stats

    # ---- acknowledgement ------------------------------------------------------------------

    def _acked(self, latencies: list[float]) -> None:
        # The commit owner committed input batches: fetch -> acknowledgement of each.
        for seconds in latencies:
            self.metrics.observe_ack(seconds)
        self._busy_until_now()

    def _busy_until_now(self) -> None:
        # The run's rate and CPU per event count until the last acknowledgement seen.
        if self._first is not None:
            self.stats.busy_s = time.perf_counter() - self._first[0]
            self.stats.cpu_s = time.process_time() - self._first[1]
            self.stats.main_cpu_s = time.thread_time() - self._first[2]  # loop thread only

    def _adapt(self, got: int) -> None:
        # Small batches while input is sparse (latency), doubling while every consume
        # comes back full (a backlog: throughput).
        if not self.config.batch.adaptive:
            return
        if got >= self.batch_n:
            self.batch_n = min(self.batch_max, self.batch_n * 2)
        elif got < self.batch_n // 4:
            self.batch_n = max(self.config.batch.min_messages, 16, self.batch_n // 2)

    def _count(self, res: Any, drift_records: int) -> None:
        s = self.stats
        s.batches += 1
        s.events += res.n_in
        s.decisions += len(res.decisions)
        s.dead_letters += len(res.dead_letters)
        s.degraded += res.n_degraded
        s.drift_records += drift_records
        for k, v in res.outcomes.items():
            s.outcomes[k] = s.outcomes.get(k, 0) + v

    def _publish_drift(self, outputs: list[Any]) -> None:
        # Drift windows closed without input (idle, or at shutdown): no input offsets,
        # tracked only so a rejected record stops the worker.
        if outputs:
            self.commits.commit_batch(outputs, [], time.perf_counter())
            self.stats.drift_records += sum(len(records) for _, records in outputs)

    def _shutdown(self) -> None:
        # The last drift window is produced first; then the commit owner's shutdown order
        # (every batch in flight acknowledged and committed, producer flushed, consumer's
        # final synchronous commit and leave).
        try:
            with contextlib.suppress(DeliveryFailed):  # already stopping; settled below
                self._publish_drift(self.step.flush())
        except Exception:
            log.exception("flushing on shutdown failed")
        finally:
            self.commits.close()
            if self.http is not None:
                self.http.stop()
            with contextlib.suppress(Exception):
                self.reader.close()
            st = self.stats
            log.info("worker %s stopped after %d events (%d decisions, %d dead letters, "
                     "%d degraded; %.0f events/s while busy, %.1f us CPU per event, "
                     "%.1f of them in the loop's thread, %d batches)", self.worker_id,
                     st.events, st.decisions, st.dead_letters, st.degraded, st.rate,
                     1e6 * st.cpu_s / max(st.events, 1),
                     1e6 * st.main_cpu_s / max(st.events, 1), st.batches)


def _parts(parts: list[Any]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in parts) or "nothing"
