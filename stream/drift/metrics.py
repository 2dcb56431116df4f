"""Prometheus view of the drift monitors: gauges of the latest window, counters of windows
and alarms, read at scrape time.

The monitor only hands over its latest window (a reference swap) and bumps a few
integers when a window closes; the per-feature gauge families are built when Prometheus
scrapes, so the hot path pays nothing per feature. One collector is registered per
registry; a monitor for a pipeline that already has one (after a model reload) replaces
it, and the counters carry on.

Metrics (``feature="__score__"`` is the model's score):
``streamscore_drift_psi``, ``..._threshold``, ``..._alarm``, ``..._js``,
``..._missing_rate`` ``{pipeline,feature}``; ``streamscore_drift_window_events``,
``streamscore_drift_windows_total``, ``streamscore_drift_page_hinkley_alarms_total``
``{pipeline}``; ``streamscore_drift_alarms_total{pipeline,feature}``;
``streamscore_drift_decision_share{pipeline,decision}``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream.drift.window import WindowStats

__all__ = ["DriftCollector", "collector_for"]

_PF = ["pipeline", "feature"]


class DriftCollector(Collector):
    """Exposes the latest window of every registered pipeline's monitor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # pipeline -> (feature labels, statistics table, events, decision shares)
        self._latest: dict[str, tuple[Sequence[str], Any, int, Mapping[str, float]]] = {}
        self._windows: dict[str, int] = {}
        self._ph: dict[str, int] = {}
        self._alarms: dict[tuple[str, str], int] = {}

    def publish(self, pipeline: str, names: Sequence[str], table: Any, *, n: int,
                alarms: Sequence[str], page_hinkley: int,
                shares: Mapping[str, float]) -> None:
        """Record a closed window (called by the monitor; O(alarms), no gauge updates).

        ``names`` are the metric's feature labels in ``table`` order, the score last;
        ``table`` is the window's statistics table (``WindowStats.from_table``; an array
        or its rows as lists), turned into gauges only when Prometheus scrapes. ``n``:
        the window's events; ``alarms``: the record's (alarming features, then "score"
        and "page_hinkley" when they fired); ``page_hinkley``: detections; ``shares``:
        the decision mix.
        """
        with self._lock:
            self._latest[pipeline] = (names, table, n, shares)
            self._windows[pipeline] = self._windows.get(pipeline, 0) + 1
            if page_hinkley:
                self._ph[pipeline] = self._ph.get(pipeline, 0) + page_hinkley
            for name in alarms:
                if name == "page_hinkley":
                    continue
                key = (pipeline, names[-1] if name == "score" else name)
                self._alarms[key] = self._alarms.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            latest = list(self._latest.items())
            windows, ph, alarms = dict(self._windows), dict(self._ph), dict(self._alarms)
        fams = {
            "psi": GaugeMetricFamily("streamscore_drift_psi",
                                     "PSI of the latest window vs training", labels=_PF),
            "threshold": GaugeMetricFamily(
                "streamscore_drift_threshold",
                "calibrated PSI threshold of the latest window (configured false-alarm rate)",
                labels=_PF),
            "alarm": GaugeMetricFamily("streamscore_drift_alarm",
                                       "1 if the latest window's PSI exceeded its threshold",
                                       labels=_PF),
            "js": GaugeMetricFamily("streamscore_drift_js",
                                    "Jensen-Shannon distance of the latest window", labels=_PF),
            "missing_rate": GaugeMetricFamily("streamscore_drift_missing_rate",
                                              "missing-value rate of the latest window",
                                              labels=_PF),
        }
        events = GaugeMetricFamily("streamscore_drift_window_events",
                                   "events in the latest drift window", labels=["pipeline"])
        share = GaugeMetricFamily("streamscore_drift_decision_share",
                                  "share of each decision in the latest window",
                                  labels=["pipeline", "decision"])
        for pipeline, (names, table, n, shares) in latest:
            stats = WindowStats.from_table(np.asarray(table, dtype=np.float64))
            columns = {
                "psi": stats.psi.tolist(), "threshold": stats.threshold.tolist(),
                "alarm": stats.alarm.astype(float).tolist(), "js": stats.js.tolist(),
                "missing_rate": stats.missing_rate.tolist(),
            }
            for key, fam in fams.items():
                for name, value in zip(names, columns[key], strict=True):
                    fam.add_metric([pipeline, name], value)
            events.add_metric([pipeline], n)
            for decision, value in shares.items():
                share.add_metric([pipeline, decision], value)
        yield from fams.values()
        yield events
        yield share
        counter = CounterMetricFamily("streamscore_drift_windows", "drift windows closed",
                                      labels=["pipeline"])
        for pipeline, value in windows.items():
            counter.add_metric([pipeline], value)
        yield counter
        counter = CounterMetricFamily("streamscore_drift_page_hinkley_alarms",
                                      "score changes detected by Page-Hinkley",
                                      labels=["pipeline"])
        for pipeline, value in ph.items():
            counter.add_metric([pipeline], value)
        yield counter
        counter = CounterMetricFamily("streamscore_drift_alarms",
                                      "feature-windows that alarmed", labels=_PF)
        for (pipeline, name), value in alarms.items():
            counter.add_metric([pipeline, name], value)
        yield counter


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, DriftCollector] = (
    weakref.WeakKeyDictionary()
)
_guard = threading.Lock()


def collector_for(registry: CollectorRegistry) -> DriftCollector:
    """The drift collector of ``registry``, registered on first use."""
    with _guard:
        collector = _collectors.get(registry)
        if collector is None:
            collector = _collectors[registry] = DriftCollector()
            registry.register(collector)
        return collector
