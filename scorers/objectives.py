"""LightGBM objectives' output transforms (raw score → prediction), as numba code.

The objective line of the model text (e.g. ``binary sigmoid:1``, ``regression sqrt``,
``multiclassova num_class:3 sigmoid:1``) is reduced to a transform code and one
parameter; ``apply_transform`` runs inside the kernels so a batch-1 call pays no extra
numpy dispatch. Formulas mirror LightGBM's ``ConvertOutput`` operation for operation.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import numpy.typing as npt

from features import jitcache
from scorers.exceptions import ModelFormatError

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = [
    "IDENTITY",
    "apply_transform",
    "transform_code",
]

IDENTITY = 0
SIGMOID = 1  # binary: 1 / (1 + exp(-sigmoid * x))
SOFTMAX = 2  # multiclass
SIGMOID_EACH = 3  # multiclassova: sigmoid per class
XENTROPY = 4  # cross_entropy: 1 / (1 + exp(-x))
XENT_LAMBDA = 5  # cross_entropy_lambda: log(1 + exp(x))
EXP = 6  # poisson, gamma, tweedie
SQUARE = 7  # any regression objective trained with reg_sqrt

_IDENTITY_NAMES = {
    "regression", "regression_l1", "huber", "fair", "quantile", "mape",
    "lambdarank", "rank_xendcg", "custom", "none", "null", "na",
}


def transform_code(objective: str, num_class: int) -> tuple[int, float]:
    """Map a model's objective line to ``(code, parameter)``; unknown ones are refused."""
    tokens = objective.split()
    if not tokens:
        return IDENTITY, 0.0
    name, params = tokens[0], dict(t.split(":", 1) for t in tokens[1:] if ":" in t)
    flags = {t for t in tokens[1:] if ":" not in t}
    try:
        sigmoid = float(params.get("sigmoid", "1"))
    except ValueError as exc:
        raise ModelFormatError(f"objective {objective!r}: sigmoid is not a number") from exc
    if name == "binary":
        return SIGMOID, sigmoid
    if name in ("multiclass", "softmax"):
        if num_class < 2:
            raise ModelFormatError(f"objective {objective!r} needs num_class >= 2")
        return SOFTMAX, 0.0
    if name in ("multiclassova", "multiclass_ova", "ova", "ovr"):
        return SIGMOID_EACH, sigmoid
    if name in ("cross_entropy", "xentropy"):
        return XENTROPY, 1.0
    if name in ("cross_entropy_lambda", "xentlambda"):
        return XENT_LAMBDA, 0.0
    if name in ("poisson", "gamma", "tweedie"):
        return EXP, 0.0
    if name in _IDENTITY_NAMES:
        return (SQUARE if "sqrt" in flags else IDENTITY), 0.0
    raise ModelFormatError(f"unsupported objective {name!r} in model text")


@nb.njit(cache=True, nogil=True)
def apply_transform(row: npt.NDArray[np.float64], code: int, param: float) -> None:
    """Turn one row of raw scores (one per class) into predictions, in place."""
    n = row.shape[0]
    if code == IDENTITY:
        return
    if code in (SIGMOID, SIGMOID_EACH, XENTROPY):
        for k in range(n):
            row[k] = 1.0 / (1.0 + math.exp(-param * row[k]))
    elif code == SOFTMAX:
        wmax = row[0]
        for k in range(1, n):
            wmax = max(row[k], wmax)
        wsum = 0.0
        for k in range(n):
            row[k] = math.exp(row[k] - wmax)
            wsum += row[k]
        for k in range(n):
            row[k] /= wsum
    elif code == XENT_LAMBDA:
        for k in range(n):
            row[k] = math.log(1.0 + math.exp(row[k]))
    elif code == EXP:
        for k in range(n):
            row[k] = math.exp(row[k])
    elif code == SQUARE:
        for k in range(n):
            x = row[k]
            sign = 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
            row[k] = sign * x * x
