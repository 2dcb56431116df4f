"""Outcomes joined back to decisions, as a stream: decoded records in, metric records out.

Pure (no Kafka; ``stream.kafka.outcomes`` feeds it from the decisions and outcomes topics
and publishes what it returns). Decision records (``schemas.decisions.Decision``: the
champion's score and version and, in shadow mode, the challenger's) and outcome records
(``schemas.outcomes.Outcome``) go into :class:`OutcomeJoiner`; :func:`metrics_records`
gives one ``OutcomeMetricsRecord`` per model version and :class:`OutcomeMetricsExporter`
the Prometheus gauges (``streamscore_outcome_*``).

Ordering: within a feed the decisions are added before the outcomes. An outcome whose
decision has not been read yet (the decisions topic lags, or a replay reads the outcomes
partition first) waits in a bounded buffer for ``early_seconds`` (or until the buffer holds
``max_early``) before it counts as unmatched. Late (after the horizon) and duplicate
outcomes are counted by the joiner; an outcome that does not decode or has no 0/1 label
counts as ``invalid`` (logged, skipped). Memory: the joiner's (~190 MB per million pending
decisions with two versions, see ``stream.drift.outcomes``) plus at most ``max_early``
waiting outcomes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import numpy as np

from schemas.decisions import Decision
from schemas.outcomes import (
    JoinCountsRecord,
    OutcomeMetricsRecord,
    decode_outcome,
    finite_or_none,
)
from stream.drift.outcomes import OutcomeConfig, OutcomeJoiner

__all__ = ["OutcomeMetricsExporter", "OutcomeStream", "join_counts", "metrics_records"]

log = logging.getLogger("streamscore.outcomes")

_decision_decoder = msgspec.json.Decoder(Decision)


def join_counts(joiner: OutcomeJoiner, invalid: int) -> JoinCountsRecord:
    """The joiner's counts as they go on the wire."""
    c = joiner.counts
    return JoinCountsRecord(joined=c.joined, late=c.late, duplicate=c.duplicate,
                            unmatched=c.unmatched, invalid=invalid, pending=joiner.pending,
                            evicted=joiner.evicted)


def metrics_records(joiner: OutcomeJoiner, pipeline: str, roles: Mapping[str, str],
                    invalid: int, at: float) -> list[OutcomeMetricsRecord]:
    """One record per model version with joined outcomes."""
    counts = join_counts(joiner, invalid)
    f = finite_or_none
    return [OutcomeMetricsRecord(
        pipeline=pipeline, model_version=v, role=roles.get(v, "champion"), at=at, n=m.n,
        positives=m.positives, auc=f(m.auc), thresholds=list(m.thresholds),
        precision=list(m.precision), recall=list(m.recall), brier=f(m.brier),
        reliability_counts=list(m.reliability_counts),
        reliability_true=list(m.reliability_true), reliability_pred=list(m.reliability_pred),
        delay_mean=f(m.delay_mean), delay_p50=f(m.delay_p50), delay_p90=f(m.delay_p90),
        delay_max=f(m.delay_max), counts=counts) for v, m in joiner.metrics().items()]


class OutcomeMetricsExporter:
    """Prometheus gauges of the latest outcome metrics (``model_version``, ``role``)."""

    def __init__(self, pipeline: str, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = registry or CollectorRegistry()
        r, lv = self.registry, ["pipeline", "model_version", "role"]
        self.pipeline = pipeline
        self.auc = Gauge("streamscore_outcome_auc", "Online AUC on joined outcomes", lv,
                         registry=r)
        self.brier = Gauge("streamscore_outcome_brier", "Brier score on joined outcomes", lv,
                           registry=r)
        self.pairs = Gauge("streamscore_outcome_window_pairs",
                           "Joined (score, label) pairs in the metrics window", lv, registry=r)
        self.precision = Gauge("streamscore_outcome_precision",
                               "Precision at a decision threshold", [*lv, "threshold"],
                               registry=r)
        self.recall = Gauge("streamscore_outcome_recall", "Recall at a decision threshold",
                            [*lv, "threshold"], registry=r)
        self.delay = Gauge("streamscore_outcome_label_delay_seconds",
                           "Label delay (outcome time - decision time) in the window",
                           [*lv, "quantile"], registry=r)
        self.outcomes = Counter("streamscore_outcomes", "Outcomes read, by result",
                                ["pipeline", "result"], registry=r)
        self._seen: dict[str, int] = {}
        self.pending = Gauge("streamscore_outcome_pending_decisions",
                             "Sampled decisions waiting for their outcome", ["pipeline"],
                             registry=r)
        self.updated = Gauge("streamscore_outcome_last_update_timestamp_seconds",
                             "When outcome metrics were last computed", ["pipeline"],
                             registry=r)

    def update(self, records: list[OutcomeMetricsRecord], counts: JoinCountsRecord,
               at: float) -> None:
        nan = float("nan")
        for rec in records:
            lbl = (self.pipeline, rec.model_version, rec.role)
            self.auc.labels(*lbl).set(nan if rec.auc is None else rec.auc)
            self.brier.labels(*lbl).set(nan if rec.brier is None else rec.brier)
            self.pairs.labels(*lbl).set(rec.n)
            for t, p, q in zip(rec.thresholds, rec.precision, rec.recall, strict=True):
                self.precision.labels(*lbl, f"{t:g}").set(p)
                self.recall.labels(*lbl, f"{t:g}").set(q)
            for quantile, v in (("0.5", rec.delay_p50), ("0.9", rec.delay_p90),
                                ("1", rec.delay_max)):
                self.delay.labels(*lbl, quantile).set(nan if v is None else v)
        for result in ("joined", "late", "duplicate", "unmatched", "invalid"):
            now, before = getattr(counts, result), self._seen.get(result, 0)
            self.outcomes.labels(self.pipeline, result).inc(now - before)
            self._seen[result] = now
        self.pending.labels(self.pipeline).set(counts.pending)
        self.updated.labels(self.pipeline).set(at)


class OutcomeStream:
    """Decoded decisions and outcomes in, joined per model version (see the module doc)."""

    def __init__(self, pipeline: str, config: OutcomeConfig, early_seconds: float = 60.0,
                 max_early: int = 100_000) -> None:
        self.pipeline = pipeline
        self.joiner = OutcomeJoiner(config)
        self.early_seconds = early_seconds
        self.max_early = max_early
        self._early: deque[tuple[float, str, float, float]] = deque()
        self.roles: dict[str, str] = {}
        self.invalid = 0

    def feed(self, decisions: Iterable[bytes], outcomes: Iterable[bytes], now: float) -> None:
        """Add the raw records of one poll (``now``: a monotonic clock, for the buffer)."""
        good: list[Decision] = []
        for value in decisions:
            try:
                d = _decision_decoder.decode(value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # not a decision: nothing to join it to
            if d.score is not None:
                good.append(d)
        fresh: list[tuple[float, str, float, float]] = []
        for value in outcomes:
            try:
                o = decode_outcome(value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                self._invalid("does not decode")
                continue
            if o.label not in (0, 1):
                self._invalid("has no 0/1 label")
                continue
            fresh.append((now, o.event_id, float(o.label), o.outcome_time))
        self._add_decisions(good)
        self._add_outcomes(fresh, now)

    def drain(self) -> None:
        """Join every outcome still waiting for its decision now (the rest count as
        unmatched): the end of a replay."""
        self._add_outcomes([], float("inf"))

    def records(self, at: float) -> list[OutcomeMetricsRecord]:
        """The metric records of every model version with joined outcomes."""
        return metrics_records(self.joiner, self.pipeline, self.roles, self.invalid, at)

    def counts(self) -> JoinCountsRecord:
        return join_counts(self.joiner, self.invalid)

    # -- internals -----------------------------------------------------------------------

    def _invalid(self, why: str) -> None:
        self.invalid += 1
        if self.invalid == 1 or self.invalid % 1000 == 0:
            log.warning("outcome record %s (%d invalid so far): skipped", why, self.invalid)

    def _add_decisions(self, decisions: list[Decision]) -> None:
        groups: dict[tuple[str, str | None], list[Decision]] = {}
        for d in decisions:
            key = (d.model_version, d.challenger_version
                   if d.challenger_score is not None else None)
            groups.setdefault(key, []).append(d)
        for (champ, chall), ds in groups.items():
            self.roles[champ] = "champion"
            scores = {champ: np.array([d.score for d in ds], dtype=np.float64)}
            if chall is not None and chall != champ:
                self.roles.setdefault(chall, "challenger")
                scores[chall] = np.array([d.challenger_score for d in ds], dtype=np.float64)
            self.joiner.add_decisions([d.event_id for d in ds],
                                      [d.decided_at for d in ds], scores)

    def _add_outcomes(self, fresh: list[tuple[float, str, float, float]], now: float) -> None:
        waiting = [*self._early, *fresh]
        self._early.clear()
        ready = []
        for item in waiting:
            if (self.joiner.knows(item[1]) or now - item[0] >= self.early_seconds
                    or len(self._early) >= self.max_early):
                ready.append(item)
            else:
                self._early.append(item)  # its decision may not have been read yet
        if ready:
            self.joiner.add_outcomes([r[1] for r in ready], [r[2] for r in ready],
                                     [r[3] for r in ready])
