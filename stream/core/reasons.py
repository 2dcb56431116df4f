"""Reason codes: the top-k positive feature contributions of a batch's adverse decisions.

Contributions (TreeSHAP) cost far more than scoring (measured: ~2-4 ms per row for the
demo fraud model, against ~1 us to score it), so the core only asks for the model's
adverse decisions (review, decline) - the ones a customer or an auditor asks about - at
most ``max_explain`` rows per batch, and ``explain`` stops before its time allowance (a
tenth of the latency budget) would be overspent, judging by the rows explained so far: a
profile at 500 events/s put a third of the worker's time, and its whole p99 tail, in
TreeSHAP of one batch. At least one adverse row per batch is explained. Rows left out
are flagged ``reasons_skipped`` in their records. The pipeline's
``model.reason_method: saabas`` swaps TreeSHAP for path attribution (~50x cheaper), so the
same allowance explains every adverse row of a batch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.decisions import Reason

__all__ = ["explain"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


def explain(
    scorer: Any, names: Sequence[str], X: FloatArray, rows: npt.NDArray[np.intp], *, k: int,
    budget_s: float, label: str = "", method: str = "treeshap",
) -> dict[int, list[Reason]]:
    """Row -> its top-``k`` reasons, for as many of ``rows`` as ``budget_s`` allows.

    ``scorer.contributions(X)`` gives rows x (features + 1) (the last column is the
    expected value); ``method`` other than "treeshap" is passed on (``"saabas"``: path
    attribution, see ``scorers.compiled``). A scorer without it, ``k <= 0`` or a failing
    call give no reasons (an explanation is never a reason to lose a decision).
    """
    if k <= 0 or rows.size == 0 or not hasattr(scorer, "contributions"):
        return {}
    t0 = time.perf_counter()
    parts: list[FloatArray] = []
    done = 0
    chunk = 1  # one row first: what it cost says how many more fit in the allowance
    try:
        while done < rows.size:
            part = X[rows[done: done + chunk]]
            c = (scorer.contributions(part) if method == "treeshap"
                 else scorer.contributions(part, method=method))
            parts.append(np.asarray(c, dtype=np.float64))
            done += len(part)
            spent = time.perf_counter() - t0
            # Only as many rows as the rest of the allowance pays for at the cost seen so
            # far (a fixed chunk of 2 overshot it: TreeSHAP of the demo fraud model is
            # ~7 ms a row against a 10 ms allowance).
            chunk = min(8, int((budget_s - spent) * done / spent)) if spent > 0 else 8
            if chunk <= 0:
                break
    except Exception:  # reasons are an explanation, never a reason to lose a decision
        log.exception("reason codes failed for %s", label)
        return {}
    rows = rows[:done]
    sub = X[rows]
    contrib = np.concatenate(parts)
    c = contrib[:, : X.shape[1]]  # the last column is the expected value
    k = min(k, c.shape[1])
    top = np.argsort(-c, axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(c, top, axis=1).tolist()
    xs = sub.tolist()
    return {
        int(r): [Reason(names[f], _finite(xs[i][f]), round(v, 6))
                 for f, v in zip(top[i].tolist(), vals[i], strict=True)]
        for i, r in enumerate(rows.tolist())
    }


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
