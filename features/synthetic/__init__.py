"""Synthetic offline feature data and labelled training sets for both pipelines.

``generate(pipeline, ...)`` writes, into ``$STREAMSCORE_HOME/data/<pipeline>/``:

- one parquet file per feature view (the FileSources of the pipeline's Feast repo), one
  row per entity, timestamped 24-26 h before "now" (inside every view's TTL, so the
  materialization window and the online reader both see them);
- ``events.parquet``: raw input events (exactly the worker's input fields) over the last
  24 h, sorted by time, for the load generator;
- ``training.parquet`` + ``training.json``: those events joined with their entities'
  features as of event time (the snapshot precedes every event by construction) plus the
  request-time features computed by ``features.request`` (the worker's own function), and
  a label drawn from a known nonlinear function of the features.

Fraud labels: Bernoulli(sigmoid(logit)) with interactions (foreign x unusual amount, new
account x e-commerce, bursts of card velocity, risky merchants abroad...), intercept
calibrated to the target fraud rate. Compromised cards produce bursts of fast, foreign,
large e-commerce transactions, so velocity features carry real signal. Pricing labels:
units demanded, Poisson around a demand curve ``price_ratio ** elasticity`` x competitor
pressure x hour/day seasonality x store traffic, capped by stock.

Velocity features (``card_velocity``) count the card's *earlier* events (the current one
excluded) over the last 10 min / 1 h and sum their raw ``amount`` (event currency), which
is what the worker feeds ``features.push.VelocityUpdater`` after scoring each batch.
Vectorized numpy throughout; seeded; a progress bar.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from features.exceptions import FeatureDataError
from features.repo import PIPELINES, data_dir, load_vocab, repo_path
from features.synthetic import fraud, pricing
from features.synthetic.common import VELOCITY_WINDOWS, Gen, progress_steps, window_velocity

__all__ = ["VELOCITY_WINDOWS", "GenerateResult", "generate", "window_velocity"]


@dataclass
class GenerateResult:
    """What ``generate`` wrote: file paths, row counts, timings."""

    pipeline: str
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    label_mean: float = float("nan")


def generate(
    pipeline: str,
    out_dir: str | Path | None = None,
    *,
    rows: int | None = None,
    seed: int = 7,
    cards: int = 100_000,
    merchants: int = 5_000,
    skus: int = 20_000,
    stores: int = 200,
    fraud_rate: float = 0.02,
    now: float | None = None,
    progress: bool = True,
) -> GenerateResult:
    """Generate the pipeline's offline data, events and training set (see module doc)."""
    if pipeline not in PIPELINES:
        raise FeatureDataError(f"unknown pipeline {pipeline!r}")
    sizes = {"cards": cards, "merchants": merchants, "skus": skus, "stores": stores}
    if (rows is not None and rows < 1) or any(v < 1 for v in sizes.values()):
        raise FeatureDataError(f"sizes must be positive: rows={rows}, {sizes}")
    if not 0.0 < fraud_rate < 0.5:
        raise FeatureDataError("fraud rate must be in (0, 0.5)")
    out = Path(out_dir) if out_dir is not None else data_dir(pipeline)
    out.mkdir(parents=True, exist_ok=True)
    vocab = load_vocab(repo_path(pipeline))
    gen = Gen(np.random.default_rng(seed), float(now if now is not None else time.time()))
    result = GenerateResult(pipeline, out)
    started = time.perf_counter()
    with progress_steps(progress) as step:
        if pipeline == "fraud":
            tables, label_mean = fraud.build(
                gen, vocab, cards, merchants, rows or 2 * cards, fraud_rate, step
            )
        else:
            tables, label_mean = pricing.build(gen, vocab, skus, stores, rows or 10 * skus, step)
        step("writing parquet")
        for name, (table, extra) in tables.items():
            path = out / f"{name}.parquet"
            pq.write_table(table, path, row_group_size=100_000)
            result.files[name] = path
            result.rows[name] = table.num_rows
            if extra is not None:
                meta = out / f"{name}.json"
                meta.write_text(json.dumps(extra, indent=2) + "\n")
                result.files[f"{name}.json"] = meta
    result.seconds = time.perf_counter() - started
    result.label_mean = label_mean
    return result
