"""The drift monitor: turns scored micro-batches into drift records per window.

The worker calls ``DriftMonitor.update(X, scores, decisions, now)`` once per scored
batch; the monitor adds the batch to the current sub-window's bin counts and computes
the statistics of every sub-window the batch fills in one compiled call (see
``stream.drift.ring``; binning in ``stream.drift.stats``, statistics in
``stream.drift.window``), and returns each one's record as the JSON bytes the drift topic
carries (written column by column from the statistics table by
``schemas.drift.DriftRecordEncoder``; ``schemas.drift.decode_drift`` gives the typed
``DriftRecord``). A window is the ring
of the last ``sub_windows`` sub-windows, so records slide by one sub-window
(``sub_windows: 1`` gives tumbling windows). A sub-window closes when it holds
``window_events / sub_windows`` events or spans ``window_seconds / sub_windows``
seconds, whichever comes first (0 disables either rule); a batch that crosses a count
boundary is split exactly at it.

Each record is also exposed to Prometheus (``streamscore_drift_psi{pipeline,feature}``,
``..._threshold``, ``..._alarm``... see ``stream.drift.metrics``; read at scrape time, the
score as ``feature="__score__"``) and, if a JSONL path is given, appended to that file for
``streamscore drift report``.
Publishing records on the drift topic is the worker's job (the pipeline name is the key).

The optional Page-Hinkley detector runs on every score, standardised by the training
score distribution: drift ``delta`` = 0.1 sigma per event and threshold 100 sigma. By
Siegmund's approximation the in-control run length is ~10^10 events (threshold 50 would
give ~10^6, one false alarm every few minutes at 10k events/s; measured: 5 alarms in 2M
stationary events at 50, none at 100), and a 0.5 sigma shift is detected in 150-300
events (measured on normal and skewed beta(0.5, 5) scores).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import truediv
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry

from schemas.drift import DecisionMix, DriftRecordEncoder
from schemas.errors import ConfigError
from scorers.refstats import validate_reference
from stream.config import DriftConfig
from stream.drift.calibration import max_window_events, window_quantiles
from stream.drift.metrics import collector_for
from stream.drift.ring import CUR, CUR_N, SUB, ring_arrays, step_kernel, window_closer
from stream.drift.stats import CATEGORICAL, BinLayout, build_layout

__all__ = ["FRAUD_OUTCOMES", "SCORE_LABEL", "DriftMonitor", "default_jsonl_path"]

FRAUD_OUTCOMES = ("approve", "review", "decline")
SCORE_LABEL = "__score__"
PH_DELTA = 0.1
PH_THRESHOLD = 100.0
PH_MIN_INSTANCES = 30
_ND, _F64, _I8 = np.ndarray, np.dtype(np.float64), np.dtype(np.int8)
# "No decision codes" / "no multipliers", as the step kernel reads them.
_NO_CODES = np.zeros(0, dtype=np.int8)
_NO_MULT = np.zeros(0)
log = logging.getLogger(__name__)


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
        # Chi-square quantiles, or bootstrap ones for features whose bins are sparse at
        # this window size (stream.drift.calibration).
        self._quantiles = window_quantiles(self.layout, config.window_events,
                                           config.false_alarm_rate)
        self._warn_uncalibrated()
        s = config.sub_windows
        self._sub_events = -(-config.window_events // s) if config.window_events > 0 else 0
        self._sub_seconds = config.window_seconds / s if config.window_seconds > 0 else 0.0
        # The ring (stream.drift.ring): one row per sub-window, integer columns: bin
        # counts, decision counts (outcomes + "other"), events, Page-Hinkley detections;
        # its last row is the window (the running sum of the others). Float columns per
        # sub-window: first event time, sum and count of price multipliers. Written by
        # one compiled call per batch, which also closes the sub-windows the batch fills.
        k = len(outcomes) + 1
        arrays = ring_arrays(self.layout, s, k, self._quantiles)
        self._ring, self._ringf, self._state = arrays.ring, arrays.ringf, arrays.state
        self._state[SUB] = self._sub_events
        self._sub_start: float | None = None
        self.outcomes = tuple(outcomes)
        self._outcome_index = {name: i for i, name in enumerate(self.outcomes)}
        self._score_mu, self._score_sigma = self._score_moments()
        # Page-Hinkley: parameters, then its six state values (carried across batches).
        self._ph = arrays.ph
        self._ph[:6] = [self._score_mu, self._score_sigma, PH_DELTA, PH_THRESHOLD,
                        PH_MIN_INSTANCES, 1.0 if config.page_hinkley else 0.0]
        # Each close writes a statistics table and the record's other numbers (window
        # start, multiplier sum and count, Page-Hinkley detections of the sub-window,
        # the window's decision counts, events, detections); preallocated.
        self._tables, self._extras = arrays.tables, arrays.extras
        # The compiled passes, bound to the ring once (built once, called per batch).
        self._ints, self._floats = arrays.ints, arrays.floats
        self._close_window = window_closer(self.layout, arrays)
        # The step kernel is compiled (or loaded from numba's cache) when stream.drift.ring
        # is imported; the closer now, not on the first time-closed window.
        self._close_window(0, -1)  # statistics of the empty window, into scratch
        # What every record repeats, encoded once.
        lay = self.layout
        kinds = ["categorical" if k == CATEGORICAL else "numeric" for k in lay.kinds.tolist()]
        kinds[self._n_feat] = "score"
        self._encoder = DriftRecordEncoder(
            pipeline=pipeline, model_name=self._model[0], model_version=self._model[1],
            model_sha256=self._model[2], reference_n=self.reference_n,
            false_alarm_rate=config.false_alarm_rate,
            names=[*lay.names[: self._n_feat], "score"], kinds=kinds,
            bins=(lay.df + 1).tolist())
        self._dec_names = [*self.outcomes, "other"]
        self._jsonl = Path(jsonl_path) if jsonl_path else None
        if self._jsonl is not None:
            self._jsonl.parent.mkdir(parents=True, exist_ok=True)
        # Prometheus reads the latest window at scrape time (stream.drift.metrics).
        self._collector = collector_for(registry) if registry is not None else None

    # -- public ------------------------------------------------------------------------

    def update(
        self, X: Any, scores: Any, decisions: Any = None, now: float | None = None
    ) -> list[bytes]:
        """Add one scored batch; return the records (JSON bytes of ``DriftRecord``) of the
        windows it closed.

        ``X``: float64 rows x features in model order (categorical columns hold integer
        codes, NaN for missing). ``scores``: one score per row (rows x classes is reduced
        to the top-class probability). ``decisions``: per row an outcome index into
        ``outcomes`` (integers: the cheapest), an outcome label (str; unknown labels count
        as "other"), or a price multiplier (float).
        """
        now = time.time() if now is None else float(now)
        if (type(X) is _ND and X.dtype is _F64 and type(scores) is _ND
                and scores.dtype is _F64 and scores.ndim == 1
                and (decisions is None or (type(decisions) is _ND and decisions.dtype is _I8))):
            # What the worker passes: arrays as compiled (identity checks only, ~0.1 us;
            # a numba TypeError costs ~300 us, so the kernel is not asked to find out).
            codes, mult = (_NO_CODES if decisions is None else decisions), _NO_MULT
        else:
            X, scores, codes, mult = self._convert(X, scores, decisions)
        if (self._sub_seconds and self._sub_start is not None
                and now - self._sub_start >= self._sub_seconds):
            # Checked before the time rule closes anything: a bad batch changes nothing.
            X, scores, codes, mult = self._convert(X, scores, decisions)
            records = self._close_by_time(now)
        else:
            records = []
        if self._sub_start is None:
            self._sub_start = now
        kernel, ints, floats = step_kernel, self._ints, self._floats
        try:
            # One compiled call: bins, decisions, events, Page-Hinkley, and the
            # statistics of every sub-window the batch fills (up to MAX_CLOSES a call);
            # it checks the shapes. A TypeError (e.g. a read-only array): converted.
            r, closes = kernel(X, scores, codes, mult, 0, now, ints, floats)
        except TypeError:
            X, scores, codes, mult = self._convert(X, scores, decisions)
            r, closes = kernel(X, scores, codes, mult, 0, now, ints, floats)
        if r < 0:  # shapes that do not fit, nothing counted: say which
            self._convert(X, scores, decisions)
            raise ValueError(f"batch of shape {X.shape} does not fit the monitor")
        while True:
            if closes:
                self._sub_start = now
                for i in range(closes):
                    records.append(self._emit(i, now, "count"))
            if r >= X.shape[0]:
                return records
            r, closes = kernel(X, scores, codes, mult, r, now, ints, floats)

    def tick(self, now: float | None = None) -> list[bytes]:
        """Close sub-windows whose time span has passed (call when no batch arrives)."""
        return self._close_by_time(time.time() if now is None else float(now))

    def flush(self, now: float | None = None) -> list[bytes]:
        """Close the current sub-window if it holds events (at shutdown)."""
        if self._state[CUR_N] == 0:
            return []
        return [self._close(time.time() if now is None else float(now), "flush")]

    @property
    def events_in_window(self) -> int:
        """Events currently held by the ring (the open window)."""
        return int(self._ring[-1, -2])

    # -- internals ---------------------------------------------------------------------

    def _warn_uncalibrated(self) -> None:
        """Log the features whose reference has too few rows for windows this large: their
        false-alarm rate against this one reference may be far from the configured one
        (``stream.drift.calibration``)."""
        n, alpha, lay = self.config.window_events, self.config.false_alarm_rate, self.layout
        if n <= 0:
            return
        limit = max_window_events(lay.ref_n, lay.df, alpha)
        over = np.flatnonzero(limit < n).tolist()
        if not over:
            return
        names = [*lay.names[: self._n_feat], "score"]
        shown = ", ".join(names[f] for f in over[:5]) + (
            f" and {len(over) - 5} more" if len(over) > 5 else "")
        needed = max(int(np.ceil(n * lay.ref_n[f] / max(int(limit[f]), 1))) for f in over)
        log.warning("drift windows of %d events are not calibrated per feature at "
                    "false_alarm_rate %g for %d of %d features (%s): their references "
                    "support windows of %d to %d events; build the reference from about "
                    "%d rows (reference_stats extra_rows) or use smaller windows",
                    n, alpha, len(over), len(names), shown, int(limit[over].min()),
                    int(limit[over].max()), needed)

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

    def _convert(self, X: Any, scores: Any, decisions: Any) -> tuple[Any, Any, Any, Any]:
        """``(X, scores, codes, multipliers)`` as the step kernel takes them (writable
        C-contiguous copies where needed, scores of rows x classes reduced to the top
        class), or a ValueError saying what does not fit."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self._n_feat:
            raise ValueError(f"X has shape {X.shape}, expected (rows, {self._n_feat})")
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim == 2:
            s = s[:, 0] if s.shape[1] == 1 else s.max(axis=1)
        s = np.ascontiguousarray(s.reshape(-1))
        rows = X.shape[0]
        if s.shape[0] != rows:
            raise ValueError(f"{s.shape[0]} scores for {rows} rows")
        codes, mult = _NO_CODES, _NO_MULT
        if decisions is not None:
            if (type(decisions) is np.ndarray and decisions.dtype == _I8
                    and decisions.ndim == 1):
                codes = np.ascontiguousarray(decisions)
                if codes.shape[0] != rows:
                    raise ValueError(f"{codes.shape[0]} decisions for {rows} rows")
            else:
                c, m = self._decisions(decisions, rows)
                codes = _NO_CODES if c is None else c
                mult = _NO_MULT if m is None else m
        # The kernel writes nothing into them, but numba types read-only arrays apart.
        out: list[Any] = [a if a.flags.writeable else a.copy() for a in (X, s, codes, mult)]
        return out[0], out[1], out[2], out[3]

    def _decisions(self, decisions: Any, rows: int) -> tuple[Any, Any]:
        """(codes, multipliers) of decisions that are not integer codes already."""
        if len(decisions) != rows:
            raise ValueError(f"{len(decisions)} decisions for {rows} rows")
        if isinstance(decisions, list | tuple) and rows and isinstance(decisions[0], str):
            labels: Sequence[str] = decisions
        else:
            d = np.asarray(decisions)
            if d.ndim != 1:
                raise ValueError(f"decisions of shape {d.shape}, expected ({rows},)")
            if d.dtype.kind in "iub":
                return np.ascontiguousarray(d, dtype=np.int64), None
            if d.dtype.kind == "f":
                return None, np.ascontiguousarray(d, dtype=np.float64)
            labels = d.astype(str).tolist()
        # Labels (unknown ones are "other"): the slow path, ~50 us per 512 labels;
        # integer codes are what the worker passes.
        index, other = self._outcome_index, len(self.outcomes)
        return np.fromiter((index.get(x, other) for x in labels), np.int64, rows), None

    def _close_by_time(self, now: float) -> list[bytes]:
        if not self._sub_seconds or self._sub_start is None:
            return []
        elapsed = now - self._sub_start
        if elapsed < self._sub_seconds:
            return []
        periods = int(elapsed // self._sub_seconds)
        records: list[bytes] = []
        if self._state[CUR_N] > 0:
            records.append(self._close(now, "time"))
        else:
            self._advance()
        # Sub-windows that passed without events: they expire old data from the ring.
        for _ in range(min(periods - 1, self.config.sub_windows)):
            self._advance()
        self._sub_start = now
        return records

    def _advance(self) -> None:
        cur = (int(self._state[CUR]) + 1) % self.config.sub_windows
        self._ring[-1] -= self._ring[cur]  # the sub-window leaves the window
        self._ring[cur] = 0
        self._ringf[cur] = 0.0
        self._state[CUR], self._state[CUR_N] = cur, 0

    def _close(self, now: float, closed_by: str) -> bytes:
        """Close the current sub-window outside a batch (time rule, flush)."""
        cur = int(self._state[CUR])
        nxt = (cur + 1) % self.config.sub_windows
        self._close_window(cur, nxt)  # also empties the next row
        self._state[CUR], self._state[CUR_N] = nxt, 0
        self._sub_start = now
        return self._emit(0, now, closed_by)

    def _emit(self, i: int, now: float, closed_by: str) -> bytes:
        """The record of close ``i`` (its table and extras), handed to the metrics
        collector and the JSONL file."""
        rows = self._tables[i].tolist()  # the next close reuses the table; lists stay
        psi, js, ks, w, miss, ref_miss, _n, thr = rows  # WindowStats.from_table's order
        start, msum, mcount, ph_f, *tail = self._extras[i].tolist()
        ph, n = int(ph_f), int(tail[-2])
        shares = self._shares(tail[:-2])
        data, alarms = self._encoder.encode(
            window_start=start if start != np.inf else now, window_end=now,
            closed_by=closed_by, n=n, psi=psi, threshold=thr, js=js, ks=ks, wasserstein=w,
            missing_rate=miss, reference_missing_rate=ref_miss,
            decisions=DecisionMix(counts=shares[0], shares=shares[1],
                                  mean_multiplier=msum / mcount if mcount else None),
            page_hinkley_alarms=ph)
        if self._collector is not None:
            self._collector.publish(self.pipeline, self._metric_names, rows, n=n,
                                    alarms=alarms, page_hinkley=ph, shares=shares[1])
        if self._jsonl is not None:
            with self._jsonl.open("ab") as fh:
                fh.write(data + b"\n")
        return data

    def _shares(self, totals: list[float]) -> tuple[dict[str, int], dict[str, float]]:
        """Counts and shares of the decisions in the window (the "other" slot only when
        it counted something; nothing at all without decisions)."""
        counts = list(map(int, totals))
        labelled = sum(counts)
        if not labelled:
            return {}, {}
        mix = dict(zip(self._dec_names, counts, strict=True))
        if not counts[-1]:
            del mix["other"]
        return mix, dict(zip(mix, map(truediv, mix.values(), repeat(labelled)), strict=True))
