"""The drift monitor: turns scored micro-batches into drift records per window.

The worker calls ``DriftMonitor.update(X, scores, decisions, now)`` once per scored
batch; the monitor adds the batch to the current sub-window's bin counts with one
compiled pass (see ``stream.drift_stats``) and returns a ``DriftRecord`` for every
sub-window the batch closed. A window is the ring of the last ``sub_windows``
sub-windows, so records slide by one sub-window (``sub_windows: 1`` gives tumbling
windows). A sub-window closes when it holds ``window_events / sub_windows`` events or
spans ``window_seconds / sub_windows`` seconds, whichever comes first (0 disables
either rule); a batch that crosses a count boundary is split exactly at it.

Each record is also exposed to Prometheus (``streamscore_drift_psi{pipeline,feature}``,
``..._threshold``, ``..._alarm``... see ``stream.drift_metrics``; read at scrape time, the
score as ``feature="__score__"``) and, if a JSONL path is given, appended to that file for
``streamscore drift report``.
Publishing records on the drift topic is the worker's job (``encode_drift`` gives the
bytes, the pipeline name is the key).

The optional Page-Hinkley detector runs on every score, standardised by the training
score distribution: drift ``delta`` = 0.1 sigma per event and threshold 100 sigma. By
Siegmund's approximation the in-control run length is ~10^10 events (threshold 50 would
give ~10^6, one false alarm every few minutes at 10k events/s; measured: 5 alarms in 2M
stationary events at 50, none at 100), and a 0.5 sigma shift is detected in 150-300
events (measured on normal and skewed beta(0.5, 5) scores).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry

from schemas.drift import DecisionMix, DriftRecord, FeatureDrift, encode_drift
from schemas.errors import ConfigError
from scorers.refstats import validate_reference
from stream.config import DriftConfig
from stream.drift_metrics import collector_for
from stream.drift_stats import CATEGORICAL, BinLayout, batch_counter, build_layout
from stream.drift_window import chi2_quantiles, window_closer

__all__ = ["FRAUD_OUTCOMES", "SCORE_LABEL", "DriftMonitor", "default_jsonl_path"]

FRAUD_OUTCOMES = ("approve", "review", "decline")
SCORE_LABEL = "__score__"
PH_DELTA = 0.1
PH_THRESHOLD = 100.0
PH_MIN_INSTANCES = 30


def default_jsonl_path(pipeline: str, home: str | Path | None = None) -> Path:
    """``$STREAMSCORE_HOME/drift/<pipeline>.jsonl``: where a monitor may append records."""
    import os

    root = Path(home or os.environ.get("STREAMSCORE_HOME", ".streamscore"))
    return root / "drift" / f"{pipeline}.jsonl"


def _model_field(info: Any, key: str) -> str:
    if info is None:
        return ""
    value = info.get(key, "") if isinstance(info, Mapping) else getattr(info, key, "")
    return "" if value is None else str(value)


class DriftMonitor:
    """Streaming drift windows of one pipeline's model against its training reference.

    ``reference`` is the model registry's ``reference`` object (shared shape);
    ``feature_names`` the model's feature order (the columns of ``X`` in ``update``);
    ``model_info`` a mapping or object with ``name``, ``version`` and ``sha256``.
    """

    def __init__(
        self,
        reference: Mapping[str, Any],
        feature_names: Sequence[str],
        config: DriftConfig,
        pipeline: str,
        model_info: Any = None,
        *,
        registry: CollectorRegistry | None = REGISTRY,
        jsonl_path: str | Path | None = None,
        outcomes: Sequence[str] = FRAUD_OUTCOMES,
    ) -> None:
        try:
            validate_reference(reference)
        except ValueError as exc:
            raise ConfigError(f"drift reference of the model is unusable: {exc}") from None
        feats = reference["features"]
        missing = [name for name in feature_names if name not in feats]
        if missing:
            raise ConfigError(f"drift reference has no statistics for features {missing}")
        if not 0.0 < config.false_alarm_rate < 1.0:
            raise ConfigError("drift.false_alarm_rate must be between 0 and 1")
        if config.sub_windows < 1:
            raise ConfigError("drift.sub_windows must be >= 1")
        if config.window_events <= 0 and config.window_seconds <= 0:
            raise ConfigError("drift needs window_events > 0 or window_seconds > 0")
        self.config = config
        self.pipeline = pipeline
        self.feature_names = tuple(feature_names)
        self.reference_n = int(reference.get("n", 0))
        entries = [(name, feats[name]) for name in self.feature_names]
        entries.append((SCORE_LABEL, reference["score"]))
        self.layout: BinLayout = build_layout(entries, self.reference_n)
        self._model = (_model_field(model_info, "name"), _model_field(model_info, "version"),
                       _model_field(model_info, "sha256"))
        self._n_feat = len(self.feature_names)
        self._metric_names = self.layout.names  # the score's block is SCORE_LABEL
        self._quantiles = chi2_quantiles(self.layout.df, config.false_alarm_rate)
        s = config.sub_windows
        self._sub_events = -(-config.window_events // s) if config.window_events > 0 else 0
        self._sub_seconds = config.window_seconds / s if config.window_seconds > 0 else 0.0
        # The ring: one row per sub-window. Integer columns: bin counts, decision counts
        # (outcomes + "other"), events, Page-Hinkley detections; float columns: first
        # event time, sum and count of price multipliers. One array each, written by
        # one compiled call per batch (stream.drift_stats.batch_counter) and read by one
        # per window (stream.drift_window.window_closer), which also empties the next row.
        tb, k = self.layout.total_bins, len(outcomes) + 1
        self._n_dec = k
        # The last row is the window: the running sum of the sub-window rows (a batch is
        # added to both; a sub-window leaving the window is subtracted).
        self._ring = np.zeros((s + 1, tb + k + 2), dtype=np.int64)
        self._ringf = np.zeros((s, 3))
        self._i_dec, self._i_n, self._i_ph = tb, tb + k, tb + k + 1
        self._slot_dec = [self._ring[i, tb : tb + k] for i in range(s + 1)]
        # Filled at every close: (start, multiplier sum, multiplier count, Page-Hinkley
        # detections, the window's decision counts, events, detections); preallocated.
        self._extra = np.zeros(4 + k + 2)
        self._cur = 0
        self._sub_start: float | None = None
        self.outcomes = tuple(outcomes)
        self._outcome_index = {name: i for i, name in enumerate(self.outcomes)}
        self._score_mu, self._score_sigma = self._score_moments()
        # Page-Hinkley: parameters, then its six state values (carried across batches).
        self._ph = np.zeros(12)
        self._ph[:6] = [self._score_mu, self._score_sigma, PH_DELTA, PH_THRESHOLD,
                        PH_MIN_INSTANCES, 1.0 if config.page_hinkley else 0.0]
        self._cur_n = 0  # events in the current sub-window (a Python int: cheaper)
        # The compiled passes, bound to the ring once (built once, called per batch).
        self._add = batch_counter(self.layout, self._ring, self._ringf, k, self._ph)
        self._close_window = window_closer(self.layout, self._ring, self._ringf,
                                           self._quantiles, self._extra)
        # What every record repeats, computed once.
        lay = self.layout
        self._rec_names = [*lay.names[: self._n_feat], "score"]
        self._rec_kinds: list[Any] = [
            "categorical" if k == CATEGORICAL else "numeric" for k in lay.kinds.tolist()]
        self._rec_kinds[self._n_feat] = "score"
        self._rec_bins = (lay.df + 1).tolist()
        self._dec_names = [*self.outcomes, "other"]
        self._jsonl = Path(jsonl_path) if jsonl_path else None
        if self._jsonl is not None:
            self._jsonl.parent.mkdir(parents=True, exist_ok=True)
        # Prometheus reads the latest window at scrape time (stream.drift_metrics).
        self._collector = collector_for(registry) if registry is not None else None

    # -- public ------------------------------------------------------------------------

    def update(
        self, X: Any, scores: Any, decisions: Any = None, now: float | None = None
    ) -> list[DriftRecord]:
        """Add one scored batch; return the records of the windows it closed.

        ``X``: float64 rows x features in model order (categorical columns hold integer
        codes, NaN for missing). ``scores``: one score per row (rows x classes is reduced
        to the top-class probability). ``decisions``: per row an outcome index into
        ``outcomes`` (integers: the cheapest), an outcome label (str; unknown labels count
        as "other"), or a price multiplier (float).
        """
        now = time.time() if now is None else float(now)
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self._n_feat:
            raise ValueError(f"X has shape {X.shape}, expected (rows, {self._n_feat})")
        s = scores
        if type(s) is not np.ndarray or s.dtype != np.float64 or s.ndim != 1:
            s = np.asarray(scores, dtype=np.float64)
            if s.ndim == 2:
                s = s[:, 0] if s.shape[1] == 1 else s.max(axis=1)
            s = np.ascontiguousarray(s.reshape(-1))
        rows = X.shape[0]
        if s.shape[0] != rows:
            raise ValueError(f"{s.shape[0]} scores for {rows} rows")
        records = self._close_by_time(now) if self._sub_seconds else []
        if self._sub_start is None:
            self._sub_start = now
        if rows == 0:
            return records
        kind, d = self._decision_kind(decisions, rows)
        codes = d if kind == "codes" else None
        mult = d if kind == "multipliers" else None
        sub = self._sub_events
        r = 0
        while r < rows:
            take = rows - r if not sub else min(rows - r, sub - self._cur_n)
            # One compiled pass: bins, decision codes or multipliers, events,
            # Page-Hinkley (its detections are counted in the ring row).
            self._add(X, s, r, r + take, self._cur, now, codes, mult)
            if kind == "labels":
                self._add_labels(d[r : r + take])
            self._cur_n += take
            r += take
            if sub and self._cur_n >= sub:
                records.append(self._close(now, "count"))
        return records

    def tick(self, now: float | None = None) -> list[DriftRecord]:
        """Close sub-windows whose time span has passed (call when no batch arrives)."""
        return self._close_by_time(time.time() if now is None else float(now))

    def flush(self, now: float | None = None) -> list[DriftRecord]:
        """Close the current sub-window if it holds events (at shutdown)."""
        if self._cur_n == 0:
            return []
        return [self._close(time.time() if now is None else float(now), "flush")]

    @property
    def events_in_window(self) -> int:
        """Events currently held by the ring (the open window)."""
        return int(self._ring[-1, self._i_n])

    # -- internals ---------------------------------------------------------------------

    def _score_moments(self) -> tuple[float, float]:
        lay, j = self.layout, self._n_feat
        nv = int(lay.n_value[j])
        e = lay.edges[lay.edge_start[j] : lay.edge_start[j + 1]]
        c = (e[:-1] + e[1:]) / 2.0 if e.size > 1 else e
        w = lay.ref_counts[lay.offset[j] : lay.offset[j] + nv]
        if w.sum() <= 0:
            return 0.0, 1.0
        mu = float(np.average(c, weights=w))
        sigma = float(np.sqrt(np.average((c - mu) ** 2, weights=w)))
        return mu, sigma if sigma > 0 else 1.0

    def _decision_kind(self, decisions: Any, rows: int) -> tuple[str, Any]:
        if decisions is None:
            return "none", None
        if len(decisions) != rows:
            raise ValueError(f"{len(decisions)} decisions for {rows} rows")
        if isinstance(decisions, list | tuple) and rows and isinstance(decisions[0], str):
            # Labels counted as they are: converting 512 strings to a numpy array costs
            # more than the whole binning pass (integer codes are cheaper still).
            return "labels", decisions
        d = decisions if type(decisions) is np.ndarray else np.asarray(decisions)
        if d.dtype.kind in "iu":
            return "codes", d
        if d.dtype.kind == "b":
            return "codes", d.astype(np.int8)
        if d.dtype.kind == "f":
            return "multipliers", d.astype(np.float64)
        return "labels", d.astype(str).tolist()

    def _add_labels(self, labels: Sequence[str]) -> None:
        slot, window = self._slot_dec[self._cur], self._slot_dec[-1]
        index, other = self._outcome_index, len(self.outcomes)
        for label, c in Counter(labels).items():
            i = index.get(label, other)
            slot[i] += c
            window[i] += c

    def _close_by_time(self, now: float) -> list[DriftRecord]:
        if not self._sub_seconds or self._sub_start is None:
            return []
        elapsed = now - self._sub_start
        if elapsed < self._sub_seconds:
            return []
        periods = int(elapsed // self._sub_seconds)
        records = []
        if self._cur_n > 0:
            records.append(self._close(now, "time"))
        else:
            self._advance(now)
        # Sub-windows that passed without events: they expire old data from the ring.
        for _ in range(min(periods - 1, self.config.sub_windows)):
            self._advance(now)
        self._sub_start = now
        return records

    def _advance(self, now: float, cleared: bool = False) -> None:
        self._cur = cur = (self._cur + 1) % self.config.sub_windows
        if not cleared:  # the sub-window leaves the window
            self._ring[-1] -= self._ring[cur]
            self._ring[cur] = 0
            self._ringf[cur] = 0.0
        self._cur_n = 0
        self._sub_start = now

    def _close(self, now: float, closed_by: str) -> DriftRecord:
        # The window is every sub-window of the ring: one compiled call sums the ring
        # and computes every statistic (reference-side constants were built once).
        # The compiled call also empties the ring row the window advances to.
        table, rows = self._close_window(self._cur, (self._cur + 1) % self.config.sub_windows)
        record = self._record(rows, now, closed_by)
        if self._collector is not None:
            self._collector.publish(self.pipeline, self._metric_names, table, record)
        if self._jsonl is not None:
            with self._jsonl.open("ab") as fh:
                fh.write(encode_drift(record) + b"\n")
        self._advance(now, cleared=True)
        return record

    def _features(self, rows: list[list[float]]) -> list[FeatureDrift]:
        # rows: the statistics as lists (stream.drift_window.WindowStats.from_table's order).
        psi_, js_, ks_, w_, miss_, ref_miss_, _n, thr_ = rows
        columns = zip(self._rec_names, self._rec_kinds, psi_, thr_, js_, ks_, w_, miss_,
                      ref_miss_, self._rec_bins, strict=True)
        return [
            FeatureDrift(
                name=name, kind=kind, psi=psi, threshold=thr, alarm=psi > thr,
                # drift_stats.psi_level, inlined: this runs for every feature of every window
                level="stable" if psi < 0.1 else "moderate" if psi < 0.25 else "significant",
                js=js, ks=None if ks != ks else ks, wasserstein=None if w != w else w,
                missing_rate=miss, reference_missing_rate=ref_miss, bins=bins,
            )
            for name, kind, psi, thr, js, ks, w, miss, ref_miss, bins in columns
        ]

    def _decision_mix(self, totals: list[int], msum: float, mcount: float) -> DecisionMix:
        labelled = sum(totals)
        if not labelled:
            counts: dict[str, int] = {}
            shares: dict[str, float] = {}
        else:
            counts = {name: c for name, c in zip(self._dec_names, totals, strict=True)
                      if c or name != "other"}
            shares = {k: v / labelled for k, v in counts.items()}
        mean = msum / mcount if mcount else None
        return DecisionMix(counts=counts, shares=shares, mean_multiplier=mean)

    def _record(self, rows: list[list[float]], now: float, closed_by: str) -> DriftRecord:
        *features, score = self._features(rows)
        alarms = [f.name for f in features if f.alarm]
        if score.alarm:
            alarms.append("score")
        start, msum, mcount, ph_f, *tail = self._extra.tolist()
        ph = int(ph_f)
        if ph:
            alarms.append("page_hinkley")
        return DriftRecord(
            pipeline=self.pipeline,
            model_name=self._model[0],
            model_version=self._model[1],
            model_sha256=self._model[2],
            window_start=start if start != np.inf else now,
            window_end=now,
            closed_by=closed_by,  # type: ignore[arg-type]
            n=int(tail[-2]),
            reference_n=self.reference_n,
            false_alarm_rate=self.config.false_alarm_rate,
            features=features,
            score=score,
            decisions=self._decision_mix([int(c) for c in tail[:-2]], msum, mcount),
            page_hinkley_alarms=ph,
            alarms=alarms,
        )
