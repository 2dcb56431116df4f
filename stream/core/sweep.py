"""A candidate sweep: the demand of every candidate price of a batch, one scorer call.

A demand model sees the candidate price only through the request-time features computed
from it and the event's own candidate field (``policy.candidate_field``). So each
candidate's block of rows is the batch's model matrix with just those columns rewritten,
not a rebuilt feature pool
(rebuilding the pool per candidate cost ~1.5 us per event at batch 4096), and the
request-time features of every candidate come from one call over all the blocks (one call
per candidate cost ~5 numpy passes of fixed overhead each: ~60 us a batch at batch 64).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PriceSweep"]

FloatArray = npt.NDArray[np.float64]


class PriceSweep:
    """Demand per candidate multiplier of the base price, for one pipeline.

    ``pool_names`` are the batch core's pool columns (request-time outputs first, then
    online features, then numeric event fields); ``request`` is the request-time feature
    computer (``features.request``) or None; ``candidate`` the event field holding the
    price a row is scored at.
    """

    def __init__(self, multipliers: Sequence[float], pool_names: Sequence[str],
                 request: Any, candidate: str = "") -> None:
        self.multipliers = [float(m) for m in multipliers]
        self.candidate = candidate
        self._names = list(pool_names)
        self.request = request
        self._n_req = len(getattr(request, "outputs", ()))
        # Per model plan (champion, challenger): the model columns the candidate rewrites.
        self._varying: dict[bytes, list[tuple[int, str | None]]] = {}

    def _columns(self, plan: npt.NDArray[np.intp]) -> list[tuple[int, str | None]]:
        """(model column, the request output it shows, or None for the candidate)."""
        key = plan.tobytes()
        varying = self._varying.get(key)
        if varying is None:  # planned once per model
            names, n_req = self._names, self._n_req
            varying = [(j, names[p] if p < n_req else None)
                       for j, p in enumerate(plan.tolist())
                       if p < n_req or names[p] == self.candidate]
            self._varying[key] = varying
        return varying

    def demand(self, scorer: Any, plan: npt.NDArray[np.intp], X0: FloatArray,
               base: FloatArray, inputs: Mapping[str, Any]) -> FloatArray:
        """Rows x candidates: the model's output with the price at ``base * multiplier``.

        ``X0`` is the batch's model matrix (the pool through ``plan``); ``inputs`` the
        request-time features' inputs of the batch (ignored without a request computer).
        """
        n = base.shape[0]
        k = len(self.multipliers)
        varying = self._columns(plan)
        # Candidate-major rows: block b is the batch at base * multipliers[b].
        cand = np.multiply.outer(np.asarray(self.multipliers, dtype=np.float64), base).ravel()
        out: dict[str, Any] = {}
        if self.request is not None:
            tiled = {name: np.tile(np.asarray(inputs[name]), k) for name in self.request.inputs
                     if name != self.candidate}
            tiled[self.candidate] = cand
            out = self.request.compute(tiled)
        X = np.tile(X0, (k, 1))
        for j, name in varying:
            X[:, j] = cand if name is None else out[name]
        pred = np.asarray(scorer.predict(X), dtype=np.float64)
        return pred.reshape(k, n).T
