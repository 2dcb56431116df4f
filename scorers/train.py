"""Training of LightGBM models from a parquet training set, registered with drift references.

Kept apart from inference: the worker never imports this module. A training set is a
parquet file plus an optional sidecar ``<stem>.json`` (``training.json`` beside
``training.parquet`` as written by ``streamscore features generate``)::

    {"label": "label", "features": [...ordered...], "categorical": [...],
     "objective": "binary" | "regression" | ..., "timestamp": "event_timestamp" (optional)}

Command-line flags override the sidecar. String-valued columns are encoded to integer
codes with the pipeline's ``features/repos/<P>/vocab.json`` (unknown/missing -> NaN),
the same vocabulary the online reader uses; a string column without a vocabulary gets
one built from the data, recorded in the model's metadata. The model's feature order is
the order of its training columns.

Steps: holdout split (stratified for binary labels, or by time when the sidecar names a
timestamp column), boosting with early stopping and a progress bar, holdout metrics,
reference statistics on the holdout rows (features and the model's scores on rows it
did not fit, so the score histogram is what production should look like), then
registration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scorers.exceptions import TrainingError
from scorers.refstats import DEFAULT_BINS, reference_stats
from scorers.registry import ModelVersion, Registry
from scorers.trainingdata import (
    TrainingSpec,
    _parquet_columns,
    _vocab_path,
    default_data_path,
    load_spec,
    load_training_data,
)

__all__ = [
    "DEMO_DEFAULTS",
    "TrainOptions",
    "TrainResult",
    "TrainingError",
    "TrainingSpec",
    "default_data_path",
    "describe_model",
    "evaluate",
    "load_spec",
    "load_training_data",
    "roc_auc",
    "train",
    "train_and_register",
]

log = logging.getLogger("streamscore.train")

# Demo model shapes. Fraud: rare positives (~2%) saturate fast, so a small learning rate
# and strong leaf regularization keep early stopping from ending at a few dozen trees; the
# model stays a realistic scoring load (hundreds of trees x 63 leaves). Pricing: a
# smaller regression model.
_GENERIC_DEFAULTS: dict[str, Any] = {
    "num_trees": 300,
    "num_leaves": 31,
    "learning_rate": 0.05,
    "min_data_in_leaf": 50,
    "lambda_l2": 1.0,
    "feature_fraction": 0.9,
}
DEMO_DEFAULTS: dict[str, dict[str, Any]] = {
    "fraud": {
        **_GENERIC_DEFAULTS,
        "objective": "binary",
        "num_trees": 400,
        "num_leaves": 63,
        "learning_rate": 0.02,
        "min_data_in_leaf": 200,
        "lambda_l2": 10.0,
        "feature_fraction": 0.8,
    },
    "pricing": {**_GENERIC_DEFAULTS, "objective": "regression"},
}

_BINARY = frozenset({"binary", "cross_entropy", "xentropy"})
_MULTICLASS = frozenset({"multiclass", "softmax", "multiclassova", "multiclass_ova", "ova"})

FloatArray = npt.NDArray[np.float64]


@dataclass
class TrainOptions:
    """How to learn; None means the pipeline's demo default (or the generic one)."""

    num_trees: int | None = None
    num_leaves: int | None = None
    learning_rate: float | None = None
    min_data_in_leaf: int | None = None
    valid_fraction: float = 0.2
    early_stopping_rounds: int = 30
    split: str | None = None  # "random" | "time"; default: time if spec.timestamp
    seed: int = 42
    threads: int = 2
    bins: int = DEFAULT_BINS
    progress: bool = True
    params: dict[str, Any] = field(default_factory=dict)  # extra LightGBM params


@dataclass
class TrainResult:
    """A trained model and everything the registry stores about it."""

    model_text: str
    spec: TrainingSpec
    metadata: dict[str, Any]


def _split(
    y: FloatArray, ts: Any, objective: str, options: TrainOptions
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], str]:
    """Indices of (train, valid) rows and the split kind."""
    n = y.size
    frac = options.valid_fraction
    if not 0.0 < frac < 1.0:
        raise TrainingError(f"valid fraction must be in (0, 1), got {frac}")
    kind = options.split or ("time" if ts is not None else "random")
    if kind == "time":
        if ts is None:
            raise TrainingError("a time split needs a timestamp column in the sidecar")
        order = np.argsort(ts, kind="stable")
        cut = n - max(1, round(n * frac))
        return np.sort(order[:cut]), np.sort(order[cut:]), kind
    if kind != "random":
        raise TrainingError(f"unknown split {kind!r} (random or time)")
    rng = np.random.default_rng(options.seed)
    # Stratify binary/multiclass labels so a rare class is represented in both parts.
    groups = (
        [np.flatnonzero(y == v) for v in np.unique(y)]
        if (objective in _BINARY | _MULTICLASS)
        else [np.arange(n)]
    )
    valid_parts = []
    for g in groups:
        k = round(g.size * frac)
        valid_parts.append(rng.permutation(g)[:k])
    valid = np.sort(np.concatenate(valid_parts)).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[valid] = False
    return np.flatnonzero(mask).astype(np.int64), valid, kind


def roc_auc(y: Any, scores: Any) -> float:
    """Area under the ROC curve (Mann-Whitney with average ranks for ties)."""
    yv = np.asarray(y, dtype=np.float64) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(yv.sum())
    n_neg = yv.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    _, inverse, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank per value
    pos_rank_sum = float(avg_rank[inverse][yv[order]].sum())
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def evaluate(objective: str, y: Any, pred: Any) -> dict[str, float]:
    """Holdout metrics: AUC/logloss for binary, logloss/accuracy for multiclass, else errors."""
    yv = np.asarray(y, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    eps = 1e-15
    if objective in _BINARY:
        pc = np.clip(p, eps, 1 - eps)
        return {
            "auc": roc_auc(yv, p),
            "logloss": float(-np.mean(yv * np.log(pc) + (1 - yv) * np.log(1 - pc))),
            "brier": float(np.mean((p - yv) ** 2)),
            "label_rate": float(yv.mean()),
        }
    if objective in _MULTICLASS:
        idx = yv.astype(np.int64)
        picked = np.clip(p[np.arange(idx.size), idx], eps, 1.0)
        return {
            "logloss": float(-np.mean(np.log(picked))),
            "accuracy": float(np.mean(p.argmax(axis=1) == idx)),
        }
    err = p - yv
    var = float(np.var(yv))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": float(1.0 - np.mean(err**2) / var) if var > 0 else float("nan"),
    }


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress_callback(total: int, desc: str, enabled: bool) -> Any:
    """A LightGBM callback driving a tqdm bar; shows the latest validation metric."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="tree", disable=not enabled, leave=True)

    def callback(env: Any) -> None:
        bar.update(1)
        if env.evaluation_result_list:
            _, metric, value, *_ = env.evaluation_result_list[0]
            bar.set_postfix({metric: f"{value:.5g}"}, refresh=False)

    callback.order = 5  # type: ignore[attr-defined]  # before early stopping (order 30)
    callback.bar = bar  # type: ignore[attr-defined]
    return callback


def train(
    data: Path,
    spec: TrainingSpec,
    options: TrainOptions | None = None,
    *,
    pipeline: str | None = None,
    vocab: Mapping[str, list[str]] | None = None,
) -> TrainResult:
    """Train one model on ``data`` per ``spec``; returns its text and registry metadata."""
    import lightgbm as lgb

    options = options or TrainOptions()
    if vocab is None and pipeline is not None and _vocab_path(pipeline).is_file():
        vocab = json.loads(_vocab_path(pipeline).read_text(encoding="utf-8"))
    X, y, used_vocab, ts = load_training_data(data, spec, vocab)
    if y.size < 10:
        raise TrainingError(f"{data} has only {y.size} labelled rows; need at least 10")
    objective = spec.objective
    if not objective:
        objective = "binary" if set(np.unique(y)) <= {0.0, 1.0} else "regression"
    if objective == "binary" and not set(np.unique(y)) <= {0.0, 1.0}:
        raise TrainingError(f"binary objective needs a 0/1 label; {spec.label!r} has others")
    defaults = {**_GENERIC_DEFAULTS, **DEMO_DEFAULTS.get(pipeline or "", {})}
    num_trees = int(options.num_trees or defaults["num_trees"])
    params: dict[str, Any] = {
        "objective": objective,
        "learning_rate": options.learning_rate or defaults["learning_rate"],
        "num_leaves": options.num_leaves or defaults["num_leaves"],
        "min_data_in_leaf": options.min_data_in_leaf or defaults["min_data_in_leaf"],
        "feature_fraction": defaults["feature_fraction"],
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": defaults["lambda_l2"],
        "seed": options.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": options.threads,
        "verbosity": -1,
    }
    if objective in _MULTICLASS:
        params["num_class"] = int(np.nanmax(y)) + 1
    params.update(options.params)

    train_idx, valid_idx, split_kind = _split(y, ts, objective, options)
    cats = list(spec.categorical)
    dtrain = lgb.Dataset(
        X[train_idx],
        y[train_idx],
        feature_name=list(spec.features),
        categorical_feature=cats or "auto",
        free_raw_data=True,
    )
    dvalid = dtrain.create_valid(X[valid_idx], y[valid_idx])
    progress = _progress_callback(num_trees, f"training {objective} model", options.progress)
    callbacks = [progress]
    if options.early_stopping_rounds > 0:
        callbacks.append(lgb.early_stopping(options.early_stopping_rounds, verbose=False))
    try:
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=num_trees,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=callbacks,
        )
    except lgb.basic.LightGBMError as exc:
        raise TrainingError(f"LightGBM refused the training set: {exc}") from exc
    finally:
        progress.bar.close()
    best = int(booster.best_iteration or booster.current_iteration())
    text = booster.model_to_string(num_iteration=best)
    # Score the holdout with the model exactly as it will be registered.
    final = lgb.Booster(model_str=text)
    pred = final.predict(X[valid_idx])
    metrics = evaluate(objective, y[valid_idx], pred)
    # Feature histograms from train + holdout rows: drift thresholds hold per feature only
    # when the reference is large against the window (stream.drift.calibration); the
    # score's histogram stays holdout-only (scores on training rows are optimistic).
    reference = reference_stats(
        X[valid_idx], list(spec.features), pred, categorical=cats, bins=options.bins,
        extra_rows=X[train_idx],
    )
    summary: dict[str, Any] = {
        "source": str(data.resolve()),
        "source_sha256": _file_sha256(data),
        "pipeline": pipeline,
        "label": spec.label,
        "rows": int(y.size),
        "train_rows": int(train_idx.size),
        "valid_rows": int(valid_idx.size),
        "split": split_kind,
        "seed": options.seed,
        "reference_rows": "features: train + valid; score: valid",
    }
    if objective in _BINARY:
        summary["label_rate"] = float(y.mean())
        summary["positives"] = int((y > 0.5).sum())
    else:
        summary["label_mean"] = float(y.mean())
        summary["label_std"] = float(y.std())
    metadata: dict[str, Any] = {
        "source": "streamscore model train",
        "training": summary,
        "metrics": {**metrics, "best_iteration": best, "split": "valid"},
        "params": {
            **params,
            "num_boost_round": num_trees,
            "early_stopping_rounds": options.early_stopping_rounds,
        },
        "lightgbm_version": lgb.__version__,
        "reference": reference,
    }
    if used_vocab:
        metadata["vocab"] = used_vocab
    return TrainResult(model_text=text, spec=spec, metadata=metadata)


def describe_model(
    model_text: str,
    data: str | os.PathLike[str],
    *,
    label: str | None = None,
    pipeline: str | None = None,
    vocab: Mapping[str, list[str]] | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Registry metadata for a model trained elsewhere, from data shaped like its inputs.

    The parquet must hold the model's feature columns (by name); categorical features are
    the ones the model text declares. Gives the reference statistics (all rows, scores by
    LightGBM itself) and, when ``label`` is given, metrics on those rows.
    """
    import lightgbm as lgb

    from scorers.registry import model_text_info

    path = Path(data)
    if not path.is_file():
        raise TrainingError(f"data {path} does not exist")
    info = model_text_info(model_text)
    spec = TrainingSpec(
        label=label or "",
        features=tuple(info["feature_names"]),
        categorical=tuple(info["categorical_features"]),
    )
    if vocab is None and pipeline is not None and _vocab_path(pipeline).is_file():
        vocab = json.loads(_vocab_path(pipeline).read_text(encoding="utf-8"))
    X, y, used_vocab, _ = load_training_data(path, spec, vocab)
    pred = lgb.Booster(model_str=model_text).predict(X)
    meta: dict[str, Any] = {
        "training": {
            "source": str(path.resolve()),
            "source_sha256": _file_sha256(path),
            "rows": int(X.shape[0]),
            "reference_rows": "all",
            "label": label,
        },
        "reference": reference_stats(
            X, list(spec.features), pred, categorical=list(spec.categorical), bins=bins
        ),
    }
    if label:
        meta["metrics"] = {**evaluate(info["objective"], y, pred), "split": "given data"}
    if used_vocab:
        meta["vocab"] = used_vocab
    return meta


def train_and_register(
    *,
    pipeline: str | None = None,
    data: str | os.PathLike[str] | None = None,
    name: str | None = None,
    registry: Registry | None = None,
    label: str | None = None,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    objective: str | None = None,
    options: TrainOptions | None = None,
    promote: Sequence[str] = (),
) -> ModelVersion:
    """Train from a pipeline's training set (or any parquet) and register the result."""
    if data is None:
        if pipeline is None:
            raise TrainingError("say what to train on: a pipeline or a parquet file")
        path = default_data_path(pipeline)
        if not path.is_file():
            raise TrainingError(
                f"no training data at {path}; run 'streamscore features generate "
                f"--pipeline {pipeline}' first, or pass --data"
            )
    else:
        path = Path(data)
        if not path.is_file():
            raise TrainingError(f"training data {path} does not exist")
    columns = _parquet_columns(path)
    spec = load_spec(
        path,
        label=label,
        features=features,
        categorical=categorical,
        objective=objective,
        columns=columns,
    )
    result = train(path, spec, options, pipeline=pipeline)
    reg = registry or Registry()
    model_name = name or pipeline or path.stem
    return reg.register(result.model_text, model_name, result.metadata, aliases=promote)
