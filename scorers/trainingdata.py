"""Training data for ``scorers.train``: the spec (label, features, objective) and the matrix.

A training set is a parquet file plus an optional sidecar ``<stem>.json``; this module
reads both, encodes string columns with the pipeline's vocabulary (unknown/missing ->
NaN) and returns float64 matrices in the spec's feature order. See ``scorers.train``
for the whole training flow.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scorers.exceptions import TrainingError

__all__ = ["TrainingSpec", "default_data_path", "load_spec", "load_training_data"]

log = logging.getLogger("streamscore.train")

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainingSpec:
    """What to learn: label, ordered features, which are categorical, objective."""

    label: str
    features: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    objective: str = "binary"
    timestamp: str | None = None


def default_data_path(pipeline: str) -> Path:
    """``$STREAMSCORE_HOME/data/<pipeline>/training.parquet``."""
    home = Path(os.environ.get("STREAMSCORE_HOME") or ".streamscore")
    return home / "data" / pipeline / "training.parquet"


def _vocab_path(pipeline: str) -> Path:
    # features/ is a sibling package of scorers/ (editable or installed alike).
    return Path(__file__).resolve().parent.parent / "features" / "repos" / pipeline / "vocab.json"


def load_spec(
    data: Path,
    *,
    label: str | None = None,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    objective: str | None = None,
    columns: Mapping[str, str] | None = None,
) -> TrainingSpec:
    """The spec from the sidecar JSON (if any) with explicit arguments winning.

    ``columns`` (name -> dtype string of the parquet) lets defaults be inferred: without
    a feature list, every numeric or boolean column except the label and timestamp is a
    feature (string columns only if listed as categorical); without an objective, a 0/1
    label means binary and anything else regression.
    """
    sidecar = data.with_suffix(".json")
    side: dict[str, Any] = {}
    if sidecar.is_file():
        try:
            side = json.loads(sidecar.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise TrainingError(f"corrupt training sidecar {sidecar}: {exc}") from exc
        if not isinstance(side, dict):
            raise TrainingError(f"corrupt training sidecar {sidecar}: expected an object")
    lab = label or side.get("label")
    if not lab:
        raise TrainingError(f"no label column: pass --label (no 'label' in {sidecar})")
    cats = list(categorical if categorical is not None else side.get("categorical", []))
    ts = side.get("timestamp")
    feats = list(features) if features is not None else side.get("features")
    if not feats:
        if columns is None:
            raise TrainingError(f"no feature list: pass --features (none in {sidecar})")
        feats = [
            c
            for c, dtype in columns.items()
            if c not in (lab, ts)
            and (c in cats or dtype.startswith(("int", "uint", "float", "bool", "Int", "Float")))
        ]
    bad = [c for c in cats if c not in feats]
    if bad:
        raise TrainingError(f"categorical features not among the features: {bad}")
    if lab in feats:
        raise TrainingError(f"the label {lab!r} cannot also be a feature")
    return TrainingSpec(
        label=str(lab),
        features=tuple(feats),
        categorical=tuple(cats),
        objective=str(objective or side.get("objective") or ""),
        timestamp=ts,
    )


def _encode(values: Any, vocab: list[str] | None) -> tuple[FloatArray, list[str]]:
    """Strings -> float codes (index in vocab; unknown/missing -> NaN)."""
    import pandas as pd

    s = pd.Series(values, copy=False)
    if vocab is None:
        vocab = sorted(str(v) for v in s.dropna().unique())
    codes = pd.Categorical(s.astype("string"), categories=vocab).codes.astype(np.float64)
    codes[codes < 0] = np.nan
    return codes, vocab


def load_training_data(
    data: Path, spec: TrainingSpec, vocab: Mapping[str, list[str]] | None = None
) -> tuple[FloatArray, FloatArray, dict[str, list[str]], Any]:
    """(X float64 in spec order, y, vocabularies used for string columns, timestamps)."""
    import pandas as pd

    # An empty label means unlabelled data (describing a model): y is all NaN, no row dropped.
    wanted = [*spec.features] + [c for c in (spec.label, spec.timestamp) if c]
    missing = [c for c in wanted if c not in _parquet_columns(data)]
    if missing:
        raise TrainingError(f"{data} has no column(s) {missing}")
    try:
        frame = pd.read_parquet(data, columns=wanted)
    except (OSError, ValueError, KeyError) as exc:  # pyarrow raises these for bad files
        raise TrainingError(f"cannot read training data {data}: {exc}") from exc
    used: dict[str, list[str]] = {}
    cols: list[FloatArray] = []
    for name in spec.features:
        col = frame[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            cols.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
            continue
        if not (
            pd.api.types.is_string_dtype(col.dtype)
            or pd.api.types.is_object_dtype(col.dtype)
            or isinstance(col.dtype, pd.CategoricalDtype)
        ):
            raise TrainingError(f"feature {name!r} has unsupported dtype {col.dtype}")
        if name not in spec.categorical:
            raise TrainingError(f"string feature {name!r} must be listed as categorical")
        codes, used[name] = _encode(col, (vocab or {}).get(name))
        cols.append(codes)
    X = np.column_stack(cols) if cols else np.empty((len(frame), 0))
    ts = frame[spec.timestamp].to_numpy() if spec.timestamp else None
    if not spec.label:
        return np.ascontiguousarray(X), np.full(len(frame), np.nan), used, ts
    y = frame[spec.label].to_numpy(dtype=np.float64, na_value=np.nan)
    keep = ~np.isnan(y)
    if not keep.all():
        log.warning("dropping %d rows without a label", int((~keep).sum()))
        X, y = X[keep], y[keep]
        ts = ts[keep] if ts is not None else None
    return np.ascontiguousarray(X), y, used, ts


def _parquet_columns(path: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot read training data {path}: {exc}") from exc
    out: dict[str, str] = {}
    for f in schema:
        t = str(f.type)
        out[f.name] = "float64" if t == "double" else ("float32" if t == "float" else t)
    return out
