"""Shared pieces of the synthetic data generators: clock, arrow tables, velocity, labels."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from features.repo import feature_refs

__all__ = [
    "VELOCITY_WINDOWS",
    "Gen",
    "Step",
    "Tables",
    "calibrate_intercept",
    "codes_to_str",
    "lookup",
    "model_features",
    "progress_steps",
    "training_table",
    "ts_array",
    "view_table",
    "window_velocity",
    "zipf",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
# name suffix -> window seconds of the card_velocity features
VELOCITY_WINDOWS = {"10m": 600.0, "1h": 3600.0}
Step = Callable[[str], None]
# file stem -> (table, optional JSON sidecar)
Tables = dict[str, tuple[pa.Table, dict[str, Any] | None]]


class Gen:
    """The seeded generator and the snapshot/event clock."""

    def __init__(self, rng: np.random.Generator, now: float) -> None:
        self.rng = rng
        self.now = float(np.floor(now))

    def snapshot_times(self, n: int) -> F64:
        # Daily batch snapshots, 24-26 h old: before every training event.
        return self.now - 86400.0 - self.rng.uniform(0.0, 7200.0, n).round()

    def event_times(self, n: int) -> F64:
        # Live-looking events over the last 24 h (millisecond resolution).
        return self.now - self.rng.uniform(60.0, 86400.0, n).round(3)


def ts_array(seconds: F64) -> pa.Array:
    """Epoch seconds -> arrow ``timestamp[us, UTC]`` (Feast's event timestamp type)."""
    micros = np.round(seconds * 1e6).astype(np.int64)
    return pa.array(micros, type=pa.timestamp("us", tz="UTC"))


def zipf(n: int, s: float) -> F64:
    """Probabilities of ``n`` ranks falling off like ``1 / rank**s``."""
    w = 1.0 / np.arange(1, n + 1) ** s
    return np.asarray(w / w.sum(), dtype=np.float64)


def codes_to_str(codes: I64, values: list[str]) -> npt.NDArray[Any]:
    """Integer codes -> object array of the vocabulary's strings."""
    return np.asarray(values, dtype=object)[codes]


def view_table(
    keys: Mapping[str, Any], cols: Mapping[str, Any], types: Mapping[str, pa.DataType], ts: F64
) -> pa.Table:
    """An offline view table: join keys, typed features, event and created timestamps."""
    arrays: dict[str, pa.Array] = {}
    for name, values in {**keys, **cols}.items():
        arrays[name] = pa.array(values, type=types[name])
    arrays["event_timestamp"] = ts_array(ts)
    arrays["created"] = ts_array(ts)
    return pa.table(arrays)


def progress_steps(enabled: bool) -> Any:
    """A context manager yielding ``step(description)``; a rich bar when enabled."""

    @contextmanager
    def run() -> Any:
        if not enabled:
            yield lambda _desc: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]generate[/] {task.description:<24}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),  # stdout stays clean for the file list
        ) as bar:
            task = bar.add_task("start", total=7)
            first = [True]

            def step(desc: str) -> None:
                if not first[0]:
                    bar.advance(task)
                first[0] = False
                bar.update(task, description=desc)

            yield step
            bar.update(task, completed=7, description="done")

    return run()


def window_velocity(entity: I64, t: F64, amount: F64, window: float) -> tuple[F64, F64]:
    """Per event: count and amount sum of the same entity's *earlier* events in the window.

    "Earlier" means ``t - window <= t' <= t`` and before the event in (time, input) order,
    so the event itself is excluded; this is what a worker sees when it reads velocity
    before adding the event.
    """
    n = len(t)
    order = np.lexsort((t, entity))
    ent_s, t_s, a_s = entity[order], t[order], amount[order]
    # One sortable key per event: entity blocks laid out far apart on one time axis.
    span = float(np.ptp(t)) + 2.0 * window + 1.0 if n else 1.0
    key = (ent_s - ent_s.min(initial=0)).astype(np.float64) * span + (t_s - t_s.min(initial=0))
    lo = np.searchsorted(key, key - window, side="left")
    idx = np.arange(n)
    csum = np.concatenate([[0.0], np.cumsum(a_s)])
    count_s = (idx - lo).astype(np.float64)
    sum_s = csum[idx] - csum[lo]
    count = np.empty(n)
    total = np.empty(n)
    count[order] = count_s
    total[order] = sum_s
    return count, total


def calibrate_intercept(score: F64, target: float) -> float:
    """The intercept ``b`` with ``mean(sigmoid(b + score)) == target`` (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(np.mean(1.0 / (1.0 + np.exp(-(mid + score))))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def training_table(ids: Mapping[str, pa.Array], feats: Mapping[str, F64], label: F64) -> pa.Table:
    """Identifying columns, float64 model features in order, then ``label``."""
    cols: dict[str, Any] = dict(ids)
    for name, values in feats.items():
        cols[name] = pa.array(values, type=pa.float64())
    cols["label"] = pa.array(label, type=pa.float64())
    return pa.table(cols)


def lookup(values: list[str]) -> dict[str, int]:
    """Vocabulary list -> {value: code}."""
    return {v: i for i, v in enumerate(values)}


def model_features(pipeline: str) -> list[str]:
    """Bare names of the pipeline's default online model features, in model order."""
    return [ref.split(":", 1)[1] for ref in feature_refs(pipeline)]
