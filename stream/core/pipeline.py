"""The Kafka-free batch core: raw payloads in, encoded decisions and dead letters out.

``BatchCore.process`` runs the stages of one micro-batch, whole-batch at a time:
decode/validate (msgspec) -> enrich (one online read + request-time features) -> score
(compiled model, plus an optional shadow challenger) -> decide (``stream.core.policy``) ->
encode records. It knows nothing about Kafka: the worker (``stream.worker``) and a Faust
agent call it the same way, with the payloads and where they came from.

Build once, run many: everything that can be planned is planned in ``__init__`` /
``set_model`` (which online feature, request feature or event column fills which model
column); ``process`` only runs numpy over the batch. The per-event Python work is
decoding (``schemas.registry``) and one bytes format per decision record
(``stream.core.records`` encodes every field column-wise). Reason codes live in
``stream.core.reasons``, dead letters and the flood guard in ``stream.core.deadletters``, the
candidate sweep in ``stream.core.sweep``, the event spec and the loaded-model type in
``stream.core.specs`` (re-exported here). The pipeline file says which event field is
which and what the policy reads: no field name is known here.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.decisions import DECISION_SCHEMA_VERSION, StageLatencies
from schemas.errors import ConfigError
from schemas.registry import decode_batch
from stream.config import BandsPolicy, PipelineConfig, SweepPolicy
from stream.core.deadletters import DeadLetterFlood, DlqGuard, dead_letter_record, refuse
from stream.core.flags import BIT, count_reasons, flag_online
from stream.core.policy import (
    OUTCOMES,
    BandRules,
    band_rules,
    choose_price,
    policy_fields,
)
from stream.core.reasons import explain
from stream.core.records import (
    Column,
    DecisionEncoder,
    age_columns,
    band_columns,
    constant,
    count_column,
    degraded_columns,
    flag_column,
    json_pieces,
    price_columns,
    reason_column,
    rule_table,
    source_columns,
    string_pieces,
)
from stream.core.specs import EventSpec, LoadedModel, Scorer, event_spec
from stream.core.sweep import PriceSweep

__all__ = [
    "BatchCore",
    "BatchResult",
    "DeadLetterFlood",
    "DlqGuard",
    "EventSpec",
    "LoadedModel",
    "Scorer",
    "event_spec",
    "online_names_of",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


@dataclass
class BatchResult:
    """Everything one batch produced, ready to publish, plus what metrics and drift need."""

    decisions: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    n_in: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    degraded_reasons: Counter[str] = field(default_factory=Counter)
    stage_s: dict[str, float] = field(default_factory=dict)
    e2e_s: FloatArray = field(default_factory=lambda: np.zeros(0))
    budget_misses: int = 0
    n_degraded: int = 0
    online_status: str = "ok"
    features: FloatArray | None = None  # rows x model features (for drift)
    scores: FloatArray | None = None  # the score each decision reports (NaN if none)
    # Bands: outcome codes (int8 into OUTCOMES); sweep: price / base multipliers.
    drift_decisions: Any = None
    columns: dict[str, Any] = field(default_factory=dict)  # decoded event columns
    # Where each decided event came from: its index into the batch, and the batch's
    # (topic, partition, offset) per payload when known (replay-safe aggregates).
    indices: list[int] = field(default_factory=list)
    sources: Sequence[tuple[str, int, int]] | None = None
    now: float = 0.0  # the clock the batch was decided at (unix seconds)


class BatchCore:
    """Decode -> enrich -> score -> decide -> records, for one pipeline."""

    def __init__(
        self,
        config: PipelineConfig,
        model: LoadedModel,
        *,
        reader: Any = None,
        request: Any = None,
        online_names: Sequence[str] = (),
        optional_views: Sequence[str] = (),
        challenger: LoadedModel | None = None,
        worker_id: str = "",
        max_explain: int = 64,
    ) -> None:
        ev = config.event
        self.config = config
        self.spec = event_spec(config.schema, ev.key, ev.time_field, ev.id_field,
                               config.source)
        self.fields: tuple[str, ...] = self.spec.fields
        self._sweep_policy = config.policy if isinstance(config.policy, SweepPolicy) else None
        self._numeric_fields = tuple(f for f in self.fields if f not in self.spec.strings)
        self.reader = reader
        self.request = request
        self.online_names = tuple(online_names)
        self._online_at: dict[str, int] = {}
        for j, name in enumerate(self.online_names):
            self._online_at.setdefault(name, j)
        views = tuple(getattr(reader, "views", ()))
        self.views = views
        self._required_views = np.array([v not in set(optional_views) for v in views], bool)
        self.worker_id = worker_id
        self.budget_s = config.budget_ms / 1000.0
        self.max_payload = config.dead_letter.max_payload_bytes
        self.max_skew_s = config.event.max_skew_s
        self.k = config.model.reason_codes
        self.max_explain = max_explain
        self.explain_budget_s = self.budget_s / 10.0
        self._request_out: dict[str, Any] = {}
        self._records = DecisionEncoder(views)
        self._name_json = constant(config.name)
        self._worker_json = constant(worker_id)
        sp = self._sweep_policy
        self._sweep = PriceSweep(self._multipliers(), self._pool_names(), request,
                                 sp.candidate_field if sp is not None else "")
        self._rules = self._plan_rules(config.policy)
        self.model = model
        self._plan = self._plan_columns(model)
        self.challenger = challenger
        self._challenger_plan = self._plan_columns(challenger) if challenger else None

    # ---- start-up ----------------------------------------------------------------------

    def _plan_rules(self, policy: BandsPolicy | SweepPolicy) -> Any:
        """Check every field the policy reads exists; the rule names' JSON table."""
        known = (set(self.fields) | set(getattr(self.request, "outputs", ()))
                 | set(self.online_names))
        for where, name in policy_fields(policy):
            if name not in known:
                raise ConfigError(f"{self.config.source or 'pipeline'}: policy.{where} "
                                  f"{name!r} is no event field, request-time or online "
                                  "feature of this pipeline")
        if not isinstance(policy, BandsPolicy):
            return None
        self._bands = BandRules(policy)
        return rule_table(band_rules(policy))

    def _field(self, name: str, cols: dict[str, Any], online: FloatArray) -> Any:
        """An event column or request-time feature, else an online feature column."""
        if name in cols:
            return cols[name]
        return online[:, self._online_at[name]]

    def _pool_names(self) -> list[str]:
        request_out = list(getattr(self.request, "outputs", ()))
        numeric_event = [f for f in self.fields if f not in self.spec.strings]
        return request_out + list(self.online_names) + numeric_event

    def _plan_columns(self, model: LoadedModel) -> npt.NDArray[np.intp]:
        """Model column j comes from pool column plan[j] (request, then online, then event)."""
        pool = self._pool_names()
        first: dict[str, int] = {}
        for i, name in enumerate(pool):
            first.setdefault(name, i)
        missing = [f for f in model.feature_names if f not in first]
        if missing:
            raise ConfigError(
                f"model {model.label} needs features this pipeline cannot provide: "
                f"{', '.join(missing)} (add their refs under features.refs in "
                f"{self.config.source or 'the pipeline file'})"
            )
        return np.array([first[f] for f in model.feature_names], dtype=np.intp)

    def set_model(self, model: LoadedModel, challenger: LoadedModel | None = None) -> None:
        """Swap the champion (and challenger) between batches; plans before swapping."""
        plan = self._plan_columns(model)
        cplan = self._plan_columns(challenger) if challenger else None
        self.model, self._plan = model, plan
        self.challenger, self._challenger_plan = challenger, cplan

    # ---- the batch ---------------------------------------------------------------------

    def process(
        self,
        payloads: Sequence[bytes | None],
        *,
        keys: Sequence[bytes | None] | None = None,
        sources: Sequence[tuple[str, int, int]] | None = None,
        timestamps: Sequence[float] | None = None,
        now: float | None = None,
    ) -> BatchResult:
        """Run every stage over one batch; bad input becomes dead letters, never an error.

        ``sources`` are (topic, partition, offset) per payload and ``timestamps`` the
        broker/producer timestamps in unix seconds (the start of the end-to-end clock;
        the event's own ``event_time`` is used where absent).
        """
        t0 = time.perf_counter()
        wall = time.time() if now is None else now
        res = BatchResult(n_in=len(payloads))
        res.now, res.sources = wall, sources
        batch = decode_batch(self.config.schema, payloads, max_bytes=self.max_payload,
                             fast=True)
        rejected = batch.rejected
        n_bad = len(rejected)
        cols = self._columns(batch.events) if batch.events else {}
        idx = batch.indices
        if idx:  # events that decoded but must not be scored
            cols, idx = refuse(cols, idx, rejected, time_field=self.spec.time_field,
                               now=wall, max_skew_s=self.max_skew_s, request=self.request)
        t_decode = time.perf_counter()
        if len(rejected) > n_bad:  # dead letters in input order
            rejected.sort(key=attrgetter("index"))
        for rej in rejected:
            res.dead_letters.append(dead_letter_record(
                rej, payloads, keys, sources, pipeline=self.config.name,
                worker_id=self.worker_id, failed_at=wall))
            res.dead_letter_reasons[rej.code] += 1
        n = len(idx)
        res.stage_s["decode"] = t_decode - t0
        if n == 0:
            return res

        res.columns = cols
        res.indices = idx
        start = np.asarray(cols[self.spec.time_field], dtype=np.float64)
        if timestamps is not None:
            ts = np.asarray(timestamps, dtype=np.float64)
            if n != len(payloads):
                ts = ts[idx]
            start = np.where(ts > 0, ts, start)

        # Enrich: one online read for the whole batch, then request-time features.
        mask = np.zeros(n, dtype=np.int64)
        online, ages = self._online(cols, n, wall, mask, res)
        pool = self._pool(cols, online, n)
        # Request-time outputs the policy and the streaming aggregates read after
        # scoring (e.g. an amount in the reference currency).
        cols.update({k: v for k, v in self._request_out.items() if k not in cols})
        t_feat = time.perf_counter()
        res.stage_s["features"] = t_feat - t_decode
        over = (wall - start) > self.budget_s
        res.budget_misses = int(np.count_nonzero(over))
        if res.budget_misses:
            mask[over] |= BIT["over_budget"]

        # Score (and shadow-score) the whole batch.
        # take() gives a C-ordered matrix (a fancy index gives a Fortran-ordered one,
        # which the compiled scorer then copied into C order: ~0.3 ms a 4096 batch).
        X = pool.take(self._plan, axis=1)
        score, price_demand = self._score(X, online, cols, mask)
        challenger_score = self._shadow(pool, online, cols)
        t_score = time.perf_counter()
        res.stage_s["score"] = t_score - t_feat
        res.features = X

        records = self._decide_and_encode(
            idx, cols, online, X, score, price_demand, challenger_score, mask, ages, start,
            sources, wall, res, t_score,
        )
        res.decisions = records
        res.n_degraded = count_reasons(mask, res.degraded_reasons)
        res.e2e_s = (time.time() if now is None else wall) - start
        return res

    def _columns(self, events: list[Any]) -> dict[str, Any]:
        """One array per event field (C-level ``map(attrgetter)``: no per-event Python)."""
        n = len(events)
        key = self.spec.key
        keys = np.fromiter(map(attrgetter(key), events), dtype=np.int64, count=n)
        cols: dict[str, Any] = {key + "__int": keys}
        for name in self.fields:
            if name == key:
                cols[name] = keys.astype(np.float64)
                continue
            dtype = object if name in self.spec.strings else np.float64
            cols[name] = np.fromiter(map(attrgetter(name), events), dtype=dtype, count=n)
        return cols

    def _online(
        self, cols: dict[str, Any], n: int, wall: float, mask: npt.NDArray[np.int64],
        res: BatchResult,
    ) -> tuple[FloatArray, FloatArray]:
        if self.reader is None:
            return np.zeros((n, 0)), np.zeros((n, 0))
        entities = {
            k: (cols[k + "__int"] if k + "__int" in cols else cols[k])
            for k in self.reader.join_keys
        }
        for k, v in entities.items():
            if v.dtype == np.float64:  # int entity keys that are not the record key
                entities[k] = v.astype(np.int64)
        got = self.reader.read(entities, now=wall)
        res.online_status = got.status
        flag_online(got, mask, self._required_views)
        return got.values, got.age

    def _request_inputs(self, cols: dict[str, Any], online: FloatArray, n: int
                        ) -> dict[str, Any]:
        """What ``request.compute`` reads: event columns first, then online features."""
        inputs: dict[str, Any] = {}
        online_at = self._online_at
        for name in self.request.inputs:
            if name in cols:
                inputs[name] = cols[name]
            elif name in online_at:
                inputs[name] = online[:, online_at[name]]
            else:  # an online input this pipeline does not read
                inputs[name] = np.full(n, np.nan)
        return inputs

    def _pool(self, cols: dict[str, Any], online: FloatArray, n: int) -> FloatArray:
        """Request outputs, online features, numeric event fields: one C-order matrix.

        Filled column by column into one allocation (two ``column_stack`` and an
        ``hstack`` cost ~3 copies and ~20 us of fixed overhead a batch).
        """
        outputs = tuple(getattr(self.request, "outputs", ()))
        numeric = self._numeric_fields
        n_on = online.shape[1]
        pool = np.empty((n, len(outputs) + n_on + len(numeric)))
        if self.request is not None:
            out = self.request.compute(self._request_inputs(cols, online, n))
            self._request_out = out
            for i, name in enumerate(outputs):
                pool[:, i] = out[name]
        pool[:, len(outputs): len(outputs) + n_on] = online
        base = len(outputs) + n_on
        for i, name in enumerate(numeric):
            pool[:, base + i] = cols[name]
        return pool

    def _score(
        self, X: FloatArray, online: FloatArray, cols: dict[str, Any],
        mask: npt.NDArray[np.int64],
    ) -> tuple[FloatArray, FloatArray | None]:
        """The champion's scores, or demand per candidate price (a sweep policy)."""
        n = X.shape[0]
        scorer = self.model.scorer
        try:
            if self._sweep_policy is not None:
                demand = self._price_sweep(scorer, self._plan, cols, online, X)
                return np.full(n, np.nan), demand
            score = np.asarray(scorer.predict(X), dtype=np.float64).reshape(n, -1)[:, -1]
            return score, None
        except Exception:  # the model path failed: decide by rules, flagged, never dropped
            log.exception("model %s failed on %d events; deciding by rules", self.model.label, n)
            mask |= BIT["model_error"]
            nan = np.full(n, np.nan)
            demand = np.full((n, len(self._multipliers())), np.nan)
            return nan, demand if self._sweep_policy is not None else None

    def _multipliers(self) -> list[float]:
        sp = self._sweep_policy
        return list(sp.candidates) if sp is not None else []

    def _price_sweep(
        self, scorer: Any, plan: npt.NDArray[np.intp], cols: dict[str, Any],
        online: FloatArray, X0: FloatArray,
    ) -> FloatArray:
        """Demand for every candidate multiplier of the base price (``stream.core.sweep``)."""
        assert self._sweep_policy is not None
        base = cols[self._sweep_policy.base_field]
        inputs = ({} if self.request is None
                  else self._request_inputs(cols, online, base.shape[0]))
        return self._sweep.demand(scorer, plan, X0, base, inputs)

    def _shadow(
        self, pool: FloatArray, online: FloatArray, cols: dict[str, Any]
    ) -> FloatArray | None:
        if self.challenger is None or self._challenger_plan is None:
            return None
        try:
            X = pool.take(self._challenger_plan, axis=1)
            if self._sweep_policy is not None:
                demand = self._price_sweep(
                    self.challenger.scorer, self._challenger_plan, cols, online, X
                )
                # The challenger's demand at the base price: comparable across models.
                mult = self._multipliers()
                return demand[:, mult.index(1.0)] if 1.0 in mult else demand.max(axis=1)
            out = np.asarray(self.challenger.scorer.predict(X), dtype=np.float64)
            return out.reshape(X.shape[0], -1)[:, -1]
        except Exception:  # a failing challenger never affects the champion's decisions
            log.exception("challenger %s failed; shadow scores omitted", self.challenger.label)
            return None

    # ---- decide and encode -------------------------------------------------------------

    def _decide_and_encode(
        self, idx: list[int], cols: dict[str, Any], online: FloatArray, X: FloatArray,
        score: FloatArray,
        demand: FloatArray | None, challenger: FloatArray | None,
        mask: npt.NDArray[np.int64], ages: FloatArray, start: FloatArray,
        sources: Sequence[tuple[str, int, int]] | None, wall: float, res: BatchResult,
        t_score: float,
    ) -> list[tuple[bytes, bytes]]:
        """Policy over the batch, reason codes, then the records, column by column."""
        policy = self.config.policy
        degraded = mask > 0
        n = score.shape[0]
        fields: dict[str, Column] = {}
        if isinstance(policy, BandsPolicy):
            dec = self._bands.decide(policy, score,
                                     lambda name: self._field(name, cols, online), degraded)
            fields.update(band_columns(dec.outcome, dec.rule, self._rules))
            # Explain the model's own adverse decisions; a rule's decision is explained
            # by its rule.
            adverse = (np.flatnonzero((dec.outcome > 0) & (dec.rule == 0) & np.isfinite(score))
                       if dec.outcome.any() else np.zeros(0, dtype=np.intp))
            skipped = adverse[self.max_explain:]
            adverse = adverse[: self.max_explain]
            scores = score
            res.drift_decisions = dec.outcome  # codes into OUTCOMES: drift's cheapest
            counts = np.bincount(dec.outcome, minlength=len(OUTCOMES)).tolist()
            res.outcomes.update({o: c for o, c in zip(OUTCOMES, counts, strict=True) if c})
        else:
            assert demand is not None
            base = cols[policy.base_field]
            pd = choose_price(policy, base, demand, degraded)
            fields.update(price_columns(pd.price, pd.rule))
            scores = pd.demand
            adverse = skipped = np.zeros(0, dtype=np.intp)
            res.drift_decisions = pd.price / base
            res.outcomes["price"] += n
        t_policy = time.perf_counter()
        res.stage_s["policy"] = t_policy - t_score
        res.scores = np.asarray(scores, dtype=np.float64)

        model = self.model
        reasons = (explain(model.scorer, model.feature_names, X, adverse, k=self.k,
                           budget_s=self.explain_budget_s, label=model.label,
                           method=self.config.model.reason_method)
                   if adverse.size else {})
        unexplained = skipped
        if len(reasons) < adverse.size:  # the allowance ran out, or reasons failed
            unexplained = np.union1d(skipped, [j for j in adverse.tolist() if j not in reasons])
        t_explain = time.perf_counter()
        res.stage_s["explain"] = t_explain - t_policy

        flags = np.zeros(n, dtype=bool)
        if len(unexplained):
            flags[np.asarray(unexplained, dtype=np.intp)] = True
        fields.update(degraded_columns(mask))
        keys = json_pieces(cols[self.spec.key + "__int"].tolist())
        fields.update({
            "reasons": reason_column(n, reasons),
            "reasons_skipped": flag_column(flags),
            "missing_features": count_column(np.isnan(X).sum(axis=1)),
            "event_id": string_pieces(cols[self.spec.id_field].tolist()),
            "pipeline": self._name_json,
            "key": keys,
            "score": json_pieces(scores.tolist()),
            "model_name": constant(model.name),
            "model_version": constant(model.version),
            "model_sha256": constant(model.sha256),
            "latency_ms": constant(StageLatencies(
                decode=round(res.stage_s["decode"] * 1e3, 3),
                features=round(res.stage_s["features"] * 1e3, 3),
                score=round(res.stage_s["score"] * 1e3, 3),
                policy=round(res.stage_s["policy"] * 1e3, 3),
            )),
            # msgspec writes NaN as null, so no per-event NaN check anywhere.
            "e2e_ms": json_pieces(((wall - start) * 1e3).round(3).tolist()),
            "event_time": json_pieces(cols[self.spec.time_field].tolist()),
            "decided_at": constant(wall),
            "worker_id": self._worker_json,
            "challenger_version": constant(self.challenger.label if self.challenger else None),
            "challenger_score": (json_pieces(challenger.tolist()) if challenger is not None
                                 else b"null"),
            "schema_version": constant(DECISION_SCHEMA_VERSION),
        })
        fields.update(source_columns(sources, idx))
        values = self._records.encode(n, fields, age_columns(ages))
        res.stage_s["encode"] = time.perf_counter() - t_explain
        return list(zip(keys, values, strict=True))

def online_names_of(refs: Sequence[str]) -> list[str]:
    """Bare feature names of ``view:feature`` references."""
    return [r.split(":", 1)[1] for r in refs]

