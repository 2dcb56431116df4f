"""The scoring worker: build every stage once, then loop consume -> process -> publish -> commit.

``Worker(config, ...)`` resolves the infrastructure (Kafka bootstrap, Redis), loads and
compiles the model from the registry, plans the feature matrix, opens the consumer and
producer, the drift monitor and the metrics/health server. ``run()`` then only calls
what was prebuilt, one micro-batch at a time:

    consume up to N -> BatchCore.process (decode/validate, enrich, score, decide)
      -> velocity updates -> drift windows
      -> publish_and_commit (decisions + dead letters + drift records acked, then commit)

A batch is always finished and committed before the next ``consume()``, which is also
the only place rebalance callbacks run: a revoked partition never has uncommitted work.
``request_stop()`` (SIGTERM/SIGINT in the CLI) ends the loop after the in-flight batch;
the worker then flushes the last drift window, waits for acks, commits and closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.errors import ConfigError
from stream.config import PipelineConfig, PricingPolicy
from stream.kafka_io import AckedProducer, BatchConsumer, next_offsets, publish_and_commit
from stream.metrics import HealthServer, WorkerMetrics
from stream.pipeline import BatchCore, DlqGuard, LoadedModel

__all__ = ["Worker", "WorkerStats", "load_model"]

log = logging.getLogger(__name__)


def load_model(registry: Any, ref: str, version: Any = None) -> LoadedModel:
    """Resolve ``ref`` in the registry (or take ``version``), verify and compile it."""
    from scorers import compile_lightgbm

    mv = version if version is not None else registry.resolve(ref)
    scorer = compile_lightgbm(mv.read_text())
    # The kernels are loaded from numba's cache on first call (~1-2 s of CPU): do it now,
    # not on the first batch of live traffic (and not after a hot reload's swap).
    row = np.zeros((1, len(scorer.feature_names)))
    scorer.predict(row)
    if hasattr(scorer, "contributions"):
        scorer.contributions(row)
    return LoadedModel(mv.name, str(mv.version), mv.sha256, scorer, mv.reference)


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
    busy_s: float = 0.0  # first input consumed -> last batch committed
    cpu_s: float = 0.0  # process CPU time (all threads, librdkafka's too) over busy_s

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
    ) -> None:
        from features.repo import feature_refs, feature_views, load_vocab
        from features.request import RequestFeatures
        from scorers.registry import Registry, default_root
        from stream.dev import resolve_bootstrap, resolve_redis_url

        self.config = c = config
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.bootstrap = bootstrap or resolve_bootstrap(c.kafka.bootstrap_servers)
        self.redis_url = redis_url or resolve_redis_url(c.features.redis_url)
        self.exactly_once = c.kafka.exactly_once if exactly_once is None else exactly_once
        self._stop = threading.Event()
        self.stats = WorkerStats()

        # Model: registry -> verified text -> compiled kernels; a watcher for hot reload.
        root = registry_root or (str(c.resolve_path(c.model.registry)) if c.model.registry
                                 else str(default_root()))
        self.registry = Registry(root)
        self.watcher = self.registry.watch(c.model.ref)
        model = load_model(self.registry, c.model.ref, self.watcher.current)
        challenger = load_model(self.registry, c.model.challenger) if c.model.challenger else None
        self._challenger_ver = challenger.version if challenger else None

        # Features: the Feast repo's refs (all of them, so a reloaded model needing another
        # one still finds it), the request-time features, the velocity updater.
        repo = c.resolve_path(c.features.repo)
        refs = list(c.features.refs) or feature_refs(repo)
        from features.online import OnlineReader

        self.reader = OnlineReader(repo, refs, self.redis_url, timeout_ms=c.features.timeout_ms)
        self._warm_up(refs)
        kind = "pricing" if isinstance(c.policy, PricingPolicy) else "fraud"
        request = RequestFeatures(kind, load_vocab(repo))
        optional = [v.name for v in feature_views(repo) if _is_push_view(v)]
        self.core = BatchCore(
            c, model, reader=self.reader, request=request,
            online_names=[r.split(":", 1)[1] for r in refs], optional_views=optional,
            challenger=challenger, worker_id=self.worker_id,
        )
        self.velocity = None
        if c.features.velocity_updates and kind == "fraud" and "card_velocity" in {
            r.split(":", 1)[0] for r in refs
        }:
            from features.push import VelocityUpdater

            self.velocity = VelocityUpdater(repo, redis_url=self.redis_url)
        self._bg = ThreadPoolExecutor(1, thread_name_prefix="streamscore-velocity")

        self.metrics = WorkerMetrics(c.name)
        self.metrics.set_model(model.name, model.version, model.sha256,
                               challenger.label if challenger else "")
        self.drift = self._make_drift(model)
        self.guard = DlqGuard(c.dead_letter.max_bad_ratio, c.dead_letter.window_events)

        # Kafka clients last: nothing above may fail after we joined the group.
        settings = {**(client_settings or {}), **c.kafka.settings}
        self.consumer = BatchConsumer(
            self.bootstrap, c.kafka.group_id or f"streamscore-{c.name}", [c.topics.input],
            {**settings, **c.kafka.consumer, **(consumer_settings or {})},
            read_committed=self.exactly_once,
            on_assign=self._on_assign, on_revoke=self._on_revoke,
        )
        self.producer = AckedProducer(
            self.bootstrap, {**settings, **c.kafka.producer},
            transactional_id=f"streamscore-{c.name}-{self.worker_id}" if self.exactly_once
            else None,
            on_backpressure=self._backpressure,
        )
        self.metrics.subscribed = True
        port = c.metrics.port if metrics_port is None else metrics_port
        self.http = HealthServer(self.metrics, c.metrics.host, port).start() if port >= 0 else None
        self.batch_max = batch_max or c.batch.max_messages
        self.batch_n = self.batch_max if not c.batch.adaptive else min(self.batch_max, 64)
        log.info("worker %s ready: pipeline %s, model %s, input %s on %s", self.worker_id,
                 c.name, model.label, c.topics.input, self.bootstrap)

    # ---- helpers -----------------------------------------------------------------------

    def _make_drift(self, model: LoadedModel) -> Any:
        c = self.config
        if not c.drift.enabled or not model.reference:
            return None
        from stream.drift import DriftMonitor

        try:
            return DriftMonitor(model.reference, model.feature_names, c.drift, c.name,
                                {"name": model.name, "version": model.version,
                                 "sha256": model.sha256},
                                registry=self.metrics.registry)
        except ConfigError as exc:
            log.warning("drift monitoring off for %s: %s", model.label, exc)
            return None

    def _warm_up(self, refs: list[str]) -> None:
        # Open the Redis connection before the first batch, so its set-up time does not
        # count against the first batch's read timeout (and fail it as "store down").
        entities: dict[str, Any] = {k: [0] if k.endswith("_id") and k != "merchant_id"
                                    and k != "store_id" else ["warm-up"]
                                    for k in self.reader.join_keys}
        got = self.reader.read(entities)
        if got.status != "ok":
            log.warning("online store not answering at start-up (%s); decisions will be "
                        "degraded until it does", got.error)

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
        self.metrics.assigned.labels(self.config.name).set(len(self.consumer.assignment))

    def request_stop(self) -> None:
        """Finish the in-flight batch, then shut down cleanly."""
        self._stop.set()

    @property
    def port(self) -> int | None:
        return self.http.port if self.http else None

    def _maybe_reload(self) -> None:
        try:
            new = self.watcher.poll()
            if new is None:
                return
            model = load_model(self.registry, self.config.model.ref, new)
            self.core.set_model(model, self.core.challenger)
        except Exception:  # a bad new version must not stop a healthy worker
            log.exception("hot reload of %s failed; keeping %s", self.config.model.ref,
                          self.core.model.label)
            return
        self.drift = self._make_drift(model)
        self.metrics.set_model(model.name, model.version, model.sha256,
                               self.core.challenger.label if self.core.challenger else "")
        self.metrics.reloads.labels(self.config.name).inc()
        self.stats.reloads += 1
        log.info("hot reload: now scoring with %s", model.label)

    # ---- the loop ----------------------------------------------------------------------

    def run(self, *, idle_exit_s: float | None = None) -> WorkerStats:
        """Consume until ``request_stop()`` (or ``idle_exit_s`` without input)."""
        c = self.config
        consume = self.consumer.consume
        process = self.core.process
        topics = c.topics
        timeout_s = c.batch.timeout_ms / 1000.0
        reload_every = c.model.reload_check_s
        next_reload = time.monotonic() + reload_every
        next_lag = time.monotonic() + 5.0
        last_input = time.monotonic()
        first_input: float | None = None
        first_cpu = 0.0
        try:
            while not self._stop.is_set():
                self.metrics.beat()
                msgs = consume(self.batch_n, timeout_s)
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
                    if self.drift is not None:
                        self._publish_drift(self.drift.tick())
                    if not self.consumer.assignment:
                        last_input = now_m  # idle means "assigned and nothing to read"
                    elif idle_exit_s is not None and now_m - last_input > idle_exit_s:
                        break
                    continue
                last_input = now_m
                t0 = time.perf_counter()
                if first_input is None:
                    first_input, first_cpu = t0, time.process_time()
                payloads = [m.value() for m in msgs]
                keys = [m.key() for m in msgs]
                sources: list[Any] = [(m.topic(), m.partition(), m.offset()) for m in msgs]
                stamps = [m.timestamp()[1] / 1000.0 for m in msgs]
                res = process(payloads, keys=keys, sources=sources, timestamps=stamps)
                drift_out: list[tuple[bytes | None, bytes]] = []
                velocity = None
                if res.decisions:
                    if self.velocity is not None:
                        # A server-side script in Redis: it runs while we wait for the
                        # broker's acks below, and is done before the next batch is read.
                        cols = res.columns
                        # An unknown currency has no USD amount: count the event, add 0.
                        amount = np.nan_to_num(cols.get("amount_usd", cols["amount"]))
                        velocity = self._bg.submit(self.velocity.update, cols["card_id__int"],
                                                   amount, cols["event_time"])
                    if self.drift is not None and res.features is not None:
                        drift_out = self._drift_records(
                            self.drift.update(res.features, res.scores, res.drift_decisions)
                        )
                publish_and_commit(
                    self.producer, self.consumer,
                    [(topics.decisions, res.decisions), (topics.dead_letter, res.dead_letters),
                     (topics.drift, drift_out)],
                    next_offsets(msgs), exactly_once=self.exactly_once,
                )
                if velocity is not None:
                    velocity.result()
                self.metrics.observe_batch(res, time.perf_counter() - t0)
                self._count(res, len(drift_out))
                self._adapt(len(msgs))
                self.stats.busy_s = time.perf_counter() - first_input
                self.stats.cpu_s = time.process_time() - first_cpu
                self.guard.add(res.n_in, len(res.dead_letters))
        finally:
            self._shutdown()
        return self.stats

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

    def _drift_records(self, records: list[Any]) -> list[tuple[bytes | None, bytes]]:
        from schemas.drift import encode_drift

        key = self.config.name.encode()
        return [(key, encode_drift(r)) for r in records]

    def _publish_drift(self, records: list[Any]) -> None:
        if records:
            out = self._drift_records(records)
            publish_and_commit(self.producer, self.consumer, [(self.config.topics.drift, out)],
                               [], exactly_once=self.exactly_once)
            self.stats.drift_records += len(out)

    def _shutdown(self) -> None:
        try:
            if self.drift is not None:
                self._publish_drift(self.drift.flush())
            self.producer.close()
        except Exception:
            log.exception("flushing on shutdown failed")
        finally:
            self.consumer.close()
            if self.http is not None:
                self.http.stop()
            self._bg.shutdown(wait=True)
            with contextlib.suppress(Exception):
                self.reader.close()
            st = self.stats
            log.info("worker %s stopped after %d events (%d decisions, %d dead letters, "
                     "%d degraded; %.0f events/s while busy, %.1f us CPU per event, "
                     "%d batches)", self.worker_id, st.events, st.decisions, st.dead_letters,
                     st.degraded, st.rate, 1e6 * st.cpu_s / max(st.events, 1), st.batches)


def _parts(parts: list[Any]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in parts) or "nothing"


def _is_push_view(view: Any) -> bool:
    # Views fed by a push source (velocity) have no row until the card's first event:
    # a missing row there means "no recent activity", not a degraded read.
    src = getattr(view, "stream_source", None)
    return type(src).__name__ == "PushSource"
