"""Prometheus metrics of one worker and its HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``.

Each worker process owns one ``WorkerMetrics`` (its own ``CollectorRegistry`` unless
given the default one, so several workers in one test process do not collide; it gets
the ``process_*`` collector, CPU, memory, open files, which the default registry has
already) and one small threaded HTTP server (timeouts, a bounded number of threads).
``/healthz`` is liveness (something progressed recently: a loop turn, or acks served
while the loop waits); ``/readyz`` is readiness (model loaded, partitions assigned or
at least subscribed, loop alive).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import values as _values

# Importing feast.metrics (Feast does it lazily, e.g. on materialization) puts
# PROMETHEUS_MULTIPROCESS_DIR into the environment for Feast's gunicorn server; a
# prometheus_client imported after that makes every metric of the process a file-backed
# value keyed by name and labels. Two WorkerMetrics in one process then share their
# counts (seen in the test suite: 3,000 events counted as 3,700) and every increment pays
# a PID check. A streamscore worker is one process with its own registry: keep values in
# memory. (Metric children look up ValueClass when they are created.)
_values.ValueClass = _values.MutexValue

__all__ = ["HTTP_MAX_CONCURRENT", "HTTP_TIMEOUT_S", "STUCK_AFTER_S", "HealthServer",
           "WorkerMetrics"]

# /healthz reports "stuck" after this long without progress (a loop turn, or delivery
# reports served while the loop waits on acks): longer than the longest bounded wait with
# no progress (stream.kafka.clients.ACK_TIMEOUT_S, 60 s), after which the worker stops by
# itself with one line instead of being killed in the middle of it.
STUCK_AFTER_S = 90.0
# A scrape or probe that sends nothing (or reads nothing) for this long is dropped, and
# at most this many requests are served at once: the rest are refused, not queued as
# threads.
HTTP_TIMEOUT_S = 5.0
HTTP_MAX_CONCURRENT = 8

# Seconds; dense under the 100 ms budget where it matters.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                    0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                  1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class WorkerMetrics:
    """Every metric the worker updates, labelled by pipeline."""

    def __init__(self, pipeline: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if r is not REGISTRY:  # the default registry has its own process_* collector
            ProcessCollector(registry=r)  # process_cpu_seconds_total, RSS, open fds, ...
        self.pipeline = pipeline
        lbl = ["pipeline"]
        self.events = Counter("streamscore_events", "Input messages consumed", lbl, registry=r)
        self.decisions = Counter("streamscore_decisions", "Decisions published, by outcome",
                                 [*lbl, "outcome"], registry=r)
        self.dead_letters = Counter("streamscore_dead_letters", "Dead letters, by reason",
                                    [*lbl, "reason"], registry=r)
        self.degraded = Counter("streamscore_degraded", "Degraded decisions, by reason",
                                [*lbl, "reason"], registry=r)
        self.e2e = Histogram("streamscore_e2e_latency_seconds",
                             "Producer timestamp -> decision encoded", lbl,
                             buckets=_LATENCY_BUCKETS, registry=r)
        # The worker's own latency: from the batch's fetch (consume() returned it) to the
        # broker's acknowledgement of its last output (its offsets are committed next).
        self.ack = Histogram("streamscore_batch_ack_seconds",
                             "Batch fetched -> every output acknowledged by the broker", lbl,
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("streamscore_stage_latency_seconds", "Per-batch stage time",
                               [*lbl, "stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.budget_miss = Counter("streamscore_budget_miss", "Events older than the budget",
                                   lbl, registry=r)
        self.batch_size = Histogram("streamscore_batch_size", "Messages per consumed batch", lbl,
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.lag = Gauge("streamscore_consumer_lag", "High watermark - position",
                         [*lbl, "topic", "partition"], registry=r)
        self.model_info = Info("streamscore_model", "Model scoring the pipeline", lbl,
                               registry=r)
        self.reloads = Counter("streamscore_model_reloads", "Hot model reloads", lbl,
                               registry=r)
        self.online_faults = Counter("streamscore_online_store_faults",
                                     "Batches whose online read failed", [*lbl, "status"],
                                     registry=r)
        self.backpressure = Counter("streamscore_backpressure_pauses",
                                    "Times consumption was paused for a full producer queue",
                                    lbl, registry=r)
        self.velocity_faults = Counter("streamscore_velocity_update_faults",
                                       "Velocity feature updates that failed, by status "
                                       "(scoring goes on)", [*lbl, "status"], registry=r)
        self.assigned = Gauge("streamscore_assigned_partitions", "Partitions assigned", lbl,
                              registry=r)
        self.reload_failures = Counter("streamscore_model_reload_failures",
                                       "Hot reloads that failed (the old model keeps scoring; "
                                       "retried at the next check)", lbl, registry=r)
        self.output_refused_total = Counter(
            "streamscore_output_refused",
            "Output records the broker refused for their content, each replaced by a "
            "dead letter", [*lbl, "topic", "error"], registry=r)
        self._e2e = self.e2e.labels(pipeline)
        self._events = self.events.labels(pipeline)
        self._batch = self.batch_size.labels(pipeline)
        self._ack = self.ack.labels(pipeline)
        self._miss = self.budget_miss.labels(pipeline)
        self._stages: dict[str, Any] = {}
        self._lag_series: set[tuple[str, int]] = set()
        self.heartbeat = time.monotonic()
        self.model_loaded = False
        self.subscribed = False

    def set_model(self, name: str, version: str, sha256: str, challenger: str = "") -> None:
        self.model_info.labels(self.pipeline).info(
            {"name": name, "version": version, "sha256": sha256, "challenger": challenger}
        )
        self.model_loaded = True

    def observe_ack(self, seconds: float) -> None:
        """One batch's fetch -> last output acknowledged."""
        self._ack.observe(seconds)

    def observe_batch(self, res: Any, ack_s: float | None = None) -> None:
        """Record one processed batch (a ``stream.core.pipeline.BatchResult``)."""
        p = self.pipeline
        self._events.inc(res.n_in)
        self._batch.observe(res.n_in)
        if ack_s is not None:
            self._ack.observe(ack_s)
        for outcome, n in res.outcomes.items():
            self.decisions.labels(p, outcome).inc(n)
        for reason, n in res.dead_letter_reasons.items():
            self.dead_letters.labels(p, reason).inc(n)
        for reason, n in res.degraded_reasons.items():
            self.degraded.labels(p, reason).inc(n)
        if res.budget_misses:
            self._miss.inc(res.budget_misses)
        if res.online_status != "ok":
            self.online_faults.labels(p, res.online_status).inc()
        for stage, seconds in res.stage_s.items():
            child = self._stages.get(stage)
            if child is None:
                child = self._stages[stage] = self.stage.labels(p, stage)
            child.observe(seconds)
        # Histogram.observe per event is ~1 us; a batch of e2e values costs that many calls,
        # so large batches observe a systematic sample (every k-th, weights kept honest by
        # the counters above; the histogram is for quantiles, not counts).
        e2e = res.e2e_s
        step = max(1, len(e2e) // 64)
        for v in e2e[::step].tolist():
            self._e2e.observe(v)

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Lag of the assigned partitions; series of partitions no longer listed go."""
        self.forget_partitions(self._lag_series - set(lags))
        for (topic, partition), lag in lags.items():
            self.lag.labels(self.pipeline, topic, str(partition)).set(lag)
            self._lag_series.add((topic, partition))

    def forget_partitions(self, parts: Iterable[tuple[str, int]]) -> None:
        """Drop the lag series of revoked or lost partitions (another worker reports them)."""
        with warnings.catch_warnings():
            # prometheus_client warns when PROMETHEUS_MULTIPROC_DIR is set (Feast sets it)
            # although our values are in memory (see above) and the removal works.
            warnings.simplefilter("ignore", UserWarning)
            for topic, partition in list(parts):
                self._lag_series.discard((topic, partition))
                self.lag.remove(self.pipeline, topic, str(partition))

    def output_refused(self, topic: str, error: str) -> None:
        """One output record refused for its content (replaced by a dead letter)."""
        self.output_refused_total.labels(self.pipeline, topic, error).inc()

    def beat(self) -> None:
        """Progress: a loop turn, or delivery reports served while waiting on acks."""
        self.heartbeat = time.monotonic()

    def healthy(self, max_silence_s: float = STUCK_AFTER_S) -> bool:
        """Whether anything progressed within ``max_silence_s``."""
        return time.monotonic() - self.heartbeat < max_silence_s

    def ready(self) -> bool:
        return self.model_loaded and self.subscribed and self.healthy()


class _BoundedServer(ThreadingHTTPServer):
    """A threaded HTTP server serving at most ``HTTP_MAX_CONCURRENT`` requests at once."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._slots = threading.BoundedSemaphore(HTTP_MAX_CONCURRENT)
        self.refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)  # a flood of connections gets no thread each
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HealthServer:
    """A threaded HTTP server for /metrics, /healthz, /readyz (port 0 picks a free one)."""

    def __init__(self, metrics: WorkerMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        m = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(m.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = m.healthy()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
                elif path == "/readyz":
                    ok = m.ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would flood the worker's log

        Handler.timeout = HTTP_TIMEOUT_S  # socket timeout: a silent client is dropped
        self.server = _BoundedServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="streamscore-http")

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
