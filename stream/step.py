"""One micro-batch through the stages, the same for the confluent-kafka worker and Faust.

``BatchStep.run`` takes a consumed batch (payloads, keys, where they came from, broker
timestamps) and returns the scored result and every record to publish:

    BatchCore.process (decode/validate -> enrich -> score -> decide -> encode)
      -> the previous batch's velocity update awaited -> drift windows updated
      -> this batch's velocity update started (in the background for the worker)
      -> outputs: decisions, dead letters, drift records

``reload`` follows the champion's and the challenger's aliases between batches (the drift
monitor follows the champion, on the metrics registry); ``tick`` and ``flush`` close drift
windows while idle and at the end; ``accept`` counts a published batch's dead letters
(a flood raises: an incident, not a crash loop). The runner publishes and commits: no
Kafka client is known here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from schemas.errors import ConfigError
from stream.config import PipelineConfig
from stream.core.assembly import Stages, load_model
from stream.core.pipeline import BatchResult, DlqGuard, LoadedModel

__all__ = ["BatchStep", "Outputs", "make_drift"]

log = logging.getLogger(__name__)

# (topic, [(key, value), ...]) per output topic of one batch.
Outputs = list[tuple[str, Sequence[tuple[bytes | None, bytes]]]]


def make_drift(config: PipelineConfig, model: LoadedModel, registry: Any = None) -> Any:
    """A drift monitor for ``model``, or None when drift is off or it has no reference."""
    if not config.drift.enabled or not model.reference:
        return None
    from stream.drift.monitor import DriftMonitor

    try:
        return DriftMonitor(model.reference, model.feature_names, config.drift, config.name,
                            {"name": model.name, "version": model.version,
                             "sha256": model.sha256},
                            registry=registry)
    except ConfigError as exc:
        log.warning("drift monitoring off for %s: %s", model.label, exc)
        return None


class BatchStep:
    """The per-batch work between consume and publish, built once per runner."""

    def __init__(self, config: PipelineConfig, stages: Stages, metrics: Any, *,
                 background_velocity: bool = True) -> None:
        self.config, self.stages, self.metrics = config, stages, metrics  # WorkerMetrics
        metrics.set_model(stages.model.name, stages.model.version, stages.model.sha256,
                          stages.challenger.label if stages.challenger else "")
        self.drift = make_drift(config, stages.model, metrics.registry)
        self.guard = DlqGuard(config.dead_letter.max_bad_ratio, config.dead_letter.window_events)
        # The worker runs the velocity update (a Redis script) in a thread while the next
        # batch is fetched and scored; one update in flight at a time keeps them in order.
        self._bg = (ThreadPoolExecutor(1, thread_name_prefix="streamscore-velocity")
                    if background_velocity and stages.velocity is not None else None)
        self._velocity: Future[Any] | None = None
        self._reload_retry: Any = None  # a new champion version whose load failed
        t = config.topics
        self._topics = (t.decisions, t.dead_letter, t.drift)
        self._drift_key = config.name.encode()

    def run(self, payloads: Sequence[bytes | None], keys: Sequence[bytes | None],
            sources: Sequence[Any], timestamps: Sequence[float]) -> tuple[BatchResult, Outputs]:
        """Score one batch; return the result and its outputs (drift records last)."""
        res = self.stages.core.process(payloads, keys=keys, sources=sources,
                                       timestamps=timestamps)
        drift_out: list[tuple[bytes | None, bytes]] = []
        if self._velocity is not None:
            # The previous batch's velocity update ran in Redis while this batch was
            # fetched and processed. Live, it has long landed before the next batch reads
            # its features (~1 ms against the gap between batches); only under a backlog
            # can a batch read counters one batch old, and backlog events are over budget
            # and decided by the fallback rules anyway. Waiting here instead of before
            # process() took the Redis script (~24 us per card) off the drain's critical
            # path.
            self._velocity_done(self._velocity)
            self._velocity = None
        if res.decisions:
            drift = self.drift
            if drift is not None and res.features is not None:
                t_drift = time.perf_counter()
                drift_out = self._drift_records(
                    drift.update(res.features, res.scores, res.drift_decisions))
                res.stage_s["drift"] = time.perf_counter() - t_drift
            # Started after the drift update: the velocity thread's Python part holds the
            # GIL for a while, and the drift stage timed right after the submit absorbed it
            # (1.8 ms a batch in a bench e2e drain).
            if self.stages.velocity is not None:
                if self._bg is not None:
                    self._velocity = self._bg.submit(self.stages.update_velocity, res)
                else:
                    self._velocity_result(self._call_velocity(res))
        decisions, dead_letter, drift_topic = self._topics
        return res, [(decisions, res.decisions), (dead_letter, res.dead_letters),
                     (drift_topic, drift_out)]

    def accept(self, res: BatchResult) -> None:
        """The batch's outputs are published: count its dead letters (a flood raises)."""
        self.guard.add(res.n_in, len(res.dead_letters))

    def tick(self) -> Outputs:
        """Drift windows that closed while no input came (empty when none did)."""
        return self._drift_outputs(self.drift.tick() if self.drift is not None else [])

    def flush(self) -> Outputs:
        """The last, partial drift window (at shutdown)."""
        return self._drift_outputs(self.drift.flush() if self.drift is not None else [])

    def reload(self) -> bool:
        """Follow the champion's and the challenger's aliases (each swaps between batches).

        Returns whether a new model (or challenger) now scores.
        """
        st, ref = self.stages, self.config.model
        core = st.core
        new = None
        try:
            new = st.watcher.poll() or self._reload_retry
            model = load_model(st.registry, ref.ref, new) if new is not None else None
            self._reload_retry = None
        except Exception:  # a bad new version must not stop a healthy worker
            log.exception("hot reload of %s failed; keeping %s", ref.ref, core.model.label)
            self._reload_retry = new  # tried again at the next check (a fault may pass)
            self.metrics.reload_failures.labels(self.config.name).inc()
            model = None
        challenger = None
        cw = st.challenger_watcher
        if cw is not None and ref.challenger:
            try:
                cnew = cw.poll()
                challenger = (load_model(st.registry, ref.challenger, cnew)
                              if cnew is not None else None)
            except Exception:  # the shadow model never stops the champion's scoring
                log.exception("hot reload of challenger %s failed; keeping %s", ref.challenger,
                              core.challenger.label if core.challenger else "none")
        if model is None and challenger is None:
            return False
        try:
            core.set_model(model or core.model, challenger or core.challenger)
        except Exception:
            log.exception("hot reload failed; keeping %s", core.model.label)
            return False
        if model is not None:
            self.drift = make_drift(self.config, model, self.metrics.registry)
            log.info("hot reload: now scoring with %s", model.label)
        if challenger is not None:
            log.info("hot reload: challenger now %s", challenger.label)
        self.metrics.set_model(core.model.name, core.model.version, core.model.sha256,
                               core.challenger.label if core.challenger else "")
        self.metrics.reloads.labels(self.config.name).inc()
        return True

    def close(self) -> None:
        """Wait for the velocity update in flight; stop its thread."""
        if self._velocity is not None:
            self._velocity_done(self._velocity)
            self._velocity = None
        if self._bg is not None:
            self._bg.shutdown(wait=True)

    def _drift_records(self, records: list[Any]) -> list[tuple[bytes | None, bytes]]:
        from schemas.drift import encode_drift

        key = self._drift_key
        return [(key, encode_drift(r)) for r in records]

    def _drift_outputs(self, records: list[Any]) -> Outputs:
        return [(self._topics[2], self._drift_records(records))] if records else []

    def _call_velocity(self, res: BatchResult) -> Any:
        try:
            return self.stages.update_velocity(res)
        except Exception as exc:
            return exc

    def _velocity_done(self, fut: Future[Any]) -> None:
        try:
            got = fut.result()
        except Exception as exc:
            got = exc
        self._velocity_result(got)

    def _velocity_result(self, got: Any) -> None:
        # Velocity features are best effort: a Redis fault (down, timeout, NOPERM/ACL,
        # wrong key type) is logged and counted, and scoring goes on (the velocity rows
        # then age and their decisions degrade, as for any stale feature).
        name = self.config.name
        if isinstance(got, Exception):
            log.warning("velocity update failed (scoring goes on): %s", got)
            self.metrics.velocity_faults.labels(name, "exception").inc()
            return
        status = getattr(got, "status", "ok")
        if status != "ok":
            self.metrics.velocity_faults.labels(name, status).inc()
