"""The Kafka-free batch core: raw payloads in, encoded decisions and dead letters out.

``BatchCore.process`` runs the stages of one micro-batch, whole-batch at a time:
decode/validate (msgspec) -> enrich (one online read + request-time features) -> score
(compiled model, plus an optional shadow challenger) -> decide (``stream.policy``) ->
encode records. It knows nothing about Kafka: the worker (``stream.worker``) and a Faust
agent call it the same way, with the payloads and where they came from.

Build once, run many: everything that can be planned is planned in ``__init__`` /
``set_model`` (which online feature, request feature or event column fills which model
column, the lookup tables of degraded reasons); ``process`` only runs numpy over the
batch. The only per-event Python work is decoding and building the output records.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.deadletter import DeadLetter
from schemas.decisions import DEGRADED_REASONS, Decision, Reason, StageLatencies
from schemas.errors import ConfigError, StreamscoreError
from schemas.registry import decode_batch, schema_type
from stream.config import FraudPolicy, PipelineConfig, PricingPolicy
from stream.policy import FRAUD_OUTCOMES, FRAUD_RULES, choose_price, decide_fraud

__all__ = [
    "EVENT_SPECS",
    "BatchCore",
    "BatchResult",
    "DeadLetterFlood",
    "DlqGuard",
    "EventSpec",
    "LoadedModel",
    "online_names_of",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

# Bit i of a row's degraded mask = DEGRADED_REASONS[i].
_BIT = {name: 1 << i for i, name in enumerate(DEGRADED_REASONS)}
# mask -> tuple of reason names, precomputed so records only index a table.
_REASONS_OF = [
    [name for i, name in enumerate(DEGRADED_REASONS) if mask >> i & 1]
    for mask in range(1 << len(DEGRADED_REASONS))
]


class DeadLetterFlood(StreamscoreError):
    """Too much of the recent input was bad: an incident, not noise; the worker stops."""


@dataclass(frozen=True)
class EventSpec:
    """What the core needs to know about an input schema."""

    schema: str
    kind: str  # "fraud" | "pricing": which request features and which policy
    key: str  # entity field the decision record is keyed by
    strings: tuple[str, ...]  # string fields (kept as object columns)


EVENT_SPECS = {
    "fraud_transaction": EventSpec(
        "fraud_transaction", "fraud", "card_id", ("event_id", "merchant_id", "currency",
                                                  "country", "channel")
    ),
    "pricing_request": EventSpec("pricing_request", "pricing", "sku_id", ("event_id", "store_id")),
}


class Scorer(Protocol):
    """What the core needs from a compiled model (``scorers.CompiledModel`` fits)."""

    feature_names: Sequence[str]

    def predict(self, X: Any, raw_score: bool = ...) -> Any: ...


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score, with the registry facts the audit record carries."""

    name: str
    version: str
    sha256: str
    scorer: Any  # Scorer; ``contributions(X)`` used for reason codes when present
    reference: dict[str, Any] | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.scorer.feature_names)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


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
    drift_decisions: Any = None  # outcome labels (fraud) or price multipliers (pricing)
    columns: dict[str, Any] = field(default_factory=dict)  # decoded event columns


class DlqGuard:
    """Stops the worker when more than ``max_ratio`` of the last window of input was bad.

    Counts are kept per consecutive window of at least ``window`` events; the check
    fires once a window is full, so a few bad messages at start-up are not an incident.
    """

    def __init__(self, max_ratio: float, window: int) -> None:
        self.max_ratio = max_ratio
        self.window = max(1, window)
        self.total = 0
        self.bad = 0

    def add(self, total: int, bad: int) -> None:
        """Count a batch; raise ``DeadLetterFlood`` when a full window is over the cap."""
        self.total += total
        self.bad += bad
        if self.total < self.window:
            return
        ratio = self.bad / self.total
        self.total = self.bad = 0
        if ratio > self.max_ratio:
            raise DeadLetterFlood(
                f"{ratio:.0%} of the last window of input was bad (cap "
                f"{self.max_ratio:.0%}); stopping: check the producers and the dead-letter topic"
            )


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
        if config.schema not in EVENT_SPECS:
            raise ConfigError(
                f"schema {config.schema!r} has no scoring spec; known: {', '.join(EVENT_SPECS)}"
            )
        self.config = config
        self.spec = EVENT_SPECS[config.schema]
        self.fields: tuple[str, ...] = tuple(schema_type(config.schema).__struct_fields__)
        self.reader = reader
        self.request = request
        self.online_names = tuple(online_names)
        views = tuple(getattr(reader, "views", ()))
        self.views = views
        self._required_views = np.array([v not in set(optional_views) for v in views], bool)
        self.worker_id = worker_id
        self.budget_s = config.budget_ms / 1000.0
        self.max_payload = config.dead_letter.max_payload_bytes
        self.k = config.model.reason_codes
        self.max_explain = max_explain
        self.explain_budget_s = self.budget_s / 10.0
        self._request_out: dict[str, Any] = {}
        self._encode = msgspec.json.Encoder().encode
        self.model = model
        self._plan = self._plan_columns(model)
        self.challenger = challenger
        self._challenger_plan = self._plan_columns(challenger) if challenger else None
        if self.spec.kind == "fraud" and not isinstance(config.policy, FraudPolicy):
            raise ConfigError(f"{config.source}: schema {config.schema} needs policy kind fraud")
        if self.spec.kind == "pricing" and not isinstance(config.policy, PricingPolicy):
            raise ConfigError(f"{config.source}: schema {config.schema} needs policy kind pricing")

    # ---- start-up ----------------------------------------------------------------------

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
        batch = decode_batch(self.config.schema, payloads, max_bytes=self.max_payload)
        t_decode = time.perf_counter()
        for rej in batch.rejected:
            res.dead_letters.append(self._dead_letter(rej, payloads, keys, sources, wall))
            res.dead_letter_reasons[rej.code] += 1
        n = len(batch.events)
        res.stage_s["decode"] = t_decode - t0
        if n == 0:
            return res

        cols = self._columns(batch.events)
        res.columns = cols
        idx = batch.indices
        start = np.asarray(cols["event_time"], dtype=np.float64)
        if timestamps is not None:
            ts = np.asarray([timestamps[i] for i in idx], dtype=np.float64)
            start = np.where(ts > 0, ts, start)

        # Enrich: one online read for the whole batch, then request-time features.
        mask = np.zeros(n, dtype=np.int64)
        online, ages = self._online(cols, n, wall, mask, res)
        pool = self._pool(cols, online, n)
        # Request-time outputs the worker needs after scoring (the velocity view sums
        # amounts in USD, like training does).
        cols.update({k: v for k, v in self._request_out.items() if k not in cols})
        t_feat = time.perf_counter()
        res.stage_s["features"] = t_feat - t_decode
        over = (wall - start) > self.budget_s
        mask[over] |= _BIT["over_budget"]
        res.budget_misses = int(over.sum())

        # Score (and shadow-score) the whole batch.
        X = pool[:, self._plan]
        score, contrib, price_demand = self._score(X, online, cols, mask)
        challenger_score = self._shadow(pool, online, cols)
        t_score = time.perf_counter()
        res.stage_s["score"] = t_score - t_feat
        res.features = X

        records = self._decide_and_encode(
            batch.events, idx, cols, X, score, contrib, price_demand, challenger_score, mask,
            ages, start, keys, sources, wall, res, t_score,
        )
        res.decisions = records
        res.n_degraded = int(np.count_nonzero(mask))
        for m, c in zip(*np.unique(mask[mask > 0], return_counts=True), strict=True):
            for reason in _REASONS_OF[int(m)]:
                res.degraded_reasons[reason] += int(c)
        res.e2e_s = (time.time() if now is None else wall) - start
        return res

    def _columns(self, events: list[Any]) -> dict[str, Any]:
        rows = zip(*map(msgspec.structs.astuple, events), strict=True)
        cols: dict[str, Any] = {}
        for name, values in zip(self.fields, rows, strict=True):
            if name in self.spec.strings:
                cols[name] = np.array(values, dtype=object)
            else:
                cols[name] = np.array(values, dtype=np.float64)
        cols[self.spec.key + "__int"] = np.array(
            [getattr(e, self.spec.key) for e in events], dtype=np.int64
        )
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
        if got.status != "ok":
            mask |= _BIT["online_store_down"]
            return got.values, got.age
        if got.missing.shape[1]:
            mask[(got.missing & self._required_views).any(axis=1)] |= _BIT["features_missing"]
            mask[got.stale.any(axis=1)] |= _BIT["features_stale"]
        return got.values, got.age

    def _pool(self, cols: dict[str, Any], online: FloatArray, n: int) -> FloatArray:
        parts: list[FloatArray] = []
        if self.request is not None:
            inputs = dict(cols)
            for j, name in enumerate(self.online_names):
                inputs.setdefault(name, online[:, j])
            for name in self.request.inputs:  # an online input this pipeline does not read
                if name not in inputs:
                    inputs[name] = np.full(n, np.nan)
            out = self.request.compute(inputs)
            self._request_out = out
            parts.append(np.column_stack([out[name] for name in self.request.outputs]))
        parts.append(online)
        numeric = [cols[f] for f in self.fields if f not in self.spec.strings]
        parts.append(np.column_stack(numeric))
        return np.ascontiguousarray(np.hstack(parts))

    def _score(
        self, X: FloatArray, online: FloatArray, cols: dict[str, Any],
        mask: npt.NDArray[np.int64],
    ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
        n = X.shape[0]
        scorer = self.model.scorer
        try:
            if self.spec.kind == "pricing":
                demand = self._price_sweep(scorer, self._plan, cols, online)
                return np.full(n, np.nan), None, demand
            score = np.asarray(scorer.predict(X), dtype=np.float64).reshape(n, -1)[:, -1]
            return score, None, None
        except Exception:  # the model path failed: decide by rules, flagged, never dropped
            log.exception("model %s failed on %d events; deciding by rules", self.model.label, n)
            mask |= _BIT["model_error"]
            nan = np.full(n, np.nan)
            demand = np.full((n, len(self._multipliers())), np.nan)
            return nan, None, demand if self.spec.kind == "pricing" else None

    def _multipliers(self) -> list[float]:
        policy = self.config.policy
        return list(policy.candidates) if isinstance(policy, PricingPolicy) else []

    def _price_sweep(
        self, scorer: Any, plan: npt.NDArray[np.intp], cols: dict[str, Any],
        online: FloatArray,
    ) -> FloatArray:
        """Demand for every candidate multiplier of the base price: rows x candidates."""
        base = cols["base_price"]
        n = base.shape[0]
        blocks = []
        for m in self._multipliers():
            swept = dict(cols)
            swept["candidate_price"] = base * m
            blocks.append(self._pool(swept, online, n)[:, plan])
        pred = np.asarray(scorer.predict(np.vstack(blocks)), dtype=np.float64)
        return pred.reshape(len(blocks), n).T

    def _shadow(
        self, pool: FloatArray, online: FloatArray, cols: dict[str, Any]
    ) -> FloatArray | None:
        if self.challenger is None or self._challenger_plan is None:
            return None
        try:
            X = pool[:, self._challenger_plan]
            if self.spec.kind == "pricing":
                demand = self._price_sweep(
                    self.challenger.scorer, self._challenger_plan, cols, online
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

    def _reasons(self, X: FloatArray, rows: npt.NDArray[np.intp]) -> dict[int, list[Reason]]:
        """Top-k positive feature contributions of the given rows (reason codes).

        Contributions (TreeSHAP) cost far more than scoring (measured: ~2-4 ms per row
        for the demo fraud model, against ~1 us to score it), so only the model's adverse
        decisions (review, decline) are explained - the ones a customer or an auditor asks
        about - and at most ``max_explain`` rows per batch. Within that, explaining stops
        once ``explain_budget_s`` (a tenth of the latency budget) is spent: a profile at
        500 events/s put a third of the worker's time, and its whole p99 tail, in
        TreeSHAP of one batch. Rows left out carry ``reasons_skipped``.
        """
        scorer = self.model.scorer
        if self.k <= 0 or rows.size == 0 or not hasattr(scorer, "contributions"):
            return {}
        t0 = time.perf_counter()
        parts: list[FloatArray] = []
        done = 0
        chunk = 2  # small first, so one slow row cannot take the whole allowance
        try:
            while done < rows.size:
                part = X[rows[done: done + chunk]]
                parts.append(np.asarray(scorer.contributions(part), dtype=np.float64))
                done += len(part)
                if time.perf_counter() - t0 > self.explain_budget_s:
                    break
                chunk = 8
        except Exception:  # reasons are an explanation, never a reason to lose a decision
            log.exception("reason codes failed for %s", self.model.label)
            return {}
        rows = rows[:done]
        sub = X[rows]
        contrib = np.concatenate(parts)
        c = contrib[:, : X.shape[1]]  # the last column is the expected value
        k = min(self.k, c.shape[1])
        top = np.argsort(-c, axis=1, kind="stable")[:, :k]
        vals = np.take_along_axis(c, top, axis=1).tolist()
        xs = sub.tolist()
        names = self.model.feature_names
        return {
            int(r): [Reason(names[f], _finite(xs[i][f]), round(v, 6))
                     for f, v in zip(top[i].tolist(), vals[i], strict=True)]
            for i, r in enumerate(rows.tolist())
        }

    def _decide_and_encode(
        self, events: list[Any], idx: list[int], cols: dict[str, Any], X: FloatArray,
        score: FloatArray, contrib: FloatArray | None, demand: FloatArray | None,
        challenger: FloatArray | None, mask: npt.NDArray[np.int64], ages: FloatArray,
        start: FloatArray, keys: Sequence[bytes | None] | None,
        sources: Sequence[tuple[str, int, int]] | None, wall: float, res: BatchResult,
        t_score: float,
    ) -> list[tuple[bytes, bytes]]:
        policy = self.config.policy
        degraded = mask > 0
        n = len(events)
        prices: list[float | None] = [None] * n
        if isinstance(policy, FraudPolicy):
            blocked = np.isin(cols["country"], policy.blocked_countries)
            dec = decide_fraud(policy, score, cols["amount"], blocked, degraded)
            outcome_names = [FRAUD_OUTCOMES[i] for i in dec.outcome.tolist()]
            # Explain the model's own adverse decisions; a rule's decision is explained
            # by its rule.
            adverse = np.flatnonzero((dec.outcome > 0) & (dec.rule == 0) & np.isfinite(score))
            skipped = adverse[self.max_explain:].tolist()
            adverse = adverse[: self.max_explain]
            rule_names: list[str] = [FRAUD_RULES[i] for i in dec.rule.tolist()]
            scores = score
        else:
            assert isinstance(policy, PricingPolicy) and demand is not None
            pd = choose_price(policy, cols["base_price"], demand, degraded)
            outcome_names = ["price"] * n
            rule_names = pd.rule
            prices = pd.price.tolist()
            scores = pd.demand
            adverse = np.zeros(0, dtype=np.intp)
            skipped = []
        t_policy = time.perf_counter()
        res.stage_s["policy"] = t_policy - t_score
        res.scores = np.asarray(scores, dtype=np.float64)
        res.drift_decisions = (
            outcome_names if isinstance(policy, FraudPolicy)
            else np.asarray(prices, dtype=np.float64) / cols["base_price"]
        )

        reason_map = self._reasons(X, adverse)
        skipped_set = set(skipped).union(j for j in adverse.tolist() if j not in reason_map)
        t_explain = time.perf_counter()
        res.stage_s["explain"] = t_explain - t_policy
        model = self.model
        ch_label = self.challenger.label if self.challenger else None
        ch_scores = challenger.tolist() if challenger is not None else [None] * n
        lat = StageLatencies(
            decode=round(res.stage_s["decode"] * 1e3, 3),
            features=round(res.stage_s["features"] * 1e3, 3),
            score=round(res.stage_s["score"] * 1e3, 3),
            policy=round(res.stage_s["policy"] * 1e3, 3),
        )
        # msgspec writes NaN as null, so ages and scores need no per-event NaN check.
        age_rows = np.round(ages, 3).tolist() if ages.shape[1] else [[]] * n
        views = self.views
        key_field = self.spec.key
        encode = self._encode
        out: list[tuple[bytes, bytes]] = []
        n_missing = np.isnan(X).sum(axis=1).tolist()
        score_list = scores.tolist()
        mask_list = mask.tolist()
        e2e = ((wall - start) * 1e3).tolist()
        outcomes = res.outcomes
        for j, ev in enumerate(events):
            i = idx[j]
            s = score_list[j]
            reasons = reason_map.get(j, [])
            m = mask_list[j]
            src = sources[i] if sources is not None else ("", -1, -1)
            cs = ch_scores[j]
            key = str(getattr(ev, key_field))
            outcome = outcome_names[j]
            outcomes[outcome] += 1
            record = Decision(
                event_id=ev.event_id, pipeline=self.config.name, key=key,
                outcome=outcome,  # type: ignore[arg-type]
                score=s, model_name=model.name, model_version=model.version,
                model_sha256=model.sha256, price=prices[j], rule=rule_names[j] or None,
                reasons=reasons, reasons_skipped=j in skipped_set,
                missing_features=n_missing[j], degraded=m > 0,
                degraded_reasons=_REASONS_OF[m],
                feature_age_s=dict(zip(views, age_rows[j], strict=False)),
                latency_ms=lat, e2e_ms=round(e2e[j], 3), event_time=ev.event_time,
                decided_at=wall, worker_id=self.worker_id, source_topic=src[0],
                source_partition=src[1], source_offset=src[2], challenger_version=ch_label,
                challenger_score=_finite(cs) if cs is not None else None,
            )
            out.append((key.encode(), encode(record)))
        res.stage_s["encode"] = time.perf_counter() - t_explain
        return out

    def _dead_letter(
        self, rej: Any, payloads: Sequence[bytes | None], keys: Sequence[bytes | None] | None,
        sources: Sequence[tuple[str, int, int]] | None, wall: float,
    ) -> tuple[bytes | None, bytes]:
        raw = payloads[rej.index] or b""
        key = keys[rej.index] if keys is not None else None
        src = sources[rej.index] if sources is not None else ("", -1, -1)
        record = DeadLetter(
            pipeline=self.config.name, error_code=rej.code, error=rej.message, payload=raw,
            payload_size=len(raw), topic=src[0], partition=src[1], offset=src[2], key=key,
            failed_at=wall, worker_id=self.worker_id,
        )
        return key, self._encode(record)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def online_names_of(refs: Sequence[str]) -> list[str]:
    """Bare feature names of ``view:feature`` references."""
    return [r.split(":", 1)[1] for r in refs]

