"""Drift binning: the bin layout from the reference and the compiled per-batch pass.

Everything the monitor needs per batch is one call of a numba kernel that adds a batch's
rows to a flat array of bin counts (one block of bins per feature, the last bin of each
block counting missing values), plus decision codes and Page-Hinkley. Statistics are
computed when a window closes (``stream.drift_window``), over the flat counts (O(bins)),
so their cost does not grow with the number of events.

Binning follows the reference rule of ``scorers.refstats``: numeric bin ``i`` is
``[e_i, e_{i+1})``, values below ``e_0`` go to bin 0, values at or above ``e_B`` to the
last bin, NaN to the missing bin. Categorical values are truncated to integer codes as
LightGBM reads them; NaN, negative, infinite and huge (>= 2^62) codes are missing, codes
outside the reference's categories count in the ``other`` bin.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "CATEGORICAL",
    "NUMERIC",
    "BinLayout",
    "accumulate",
    "batch_counter",
    "build_layout",
    "page_hinkley",
]

NUMERIC = 0
CATEGORICAL = 1
# Categorical features whose codes are all below this get a dense lookup table.
LUT_MAX_CODE = 4096
# Rows per block of the binning kernel: a block of all features (41 x 64 floats, 21 KB)
# stays in L1 while each feature's column is binned (measured: 64 beats 32, 128, 256).
BLOCK_ROWS = 64

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BinLayout:
    """Where each feature's bins live in the flat count array, and its reference counts.

    Block ``f`` is ``counts[offset[f]:offset[f + 1]]``: ``n_value[f]`` value bins (for a
    categorical feature the last of them is ``other``), then one missing bin.
    """

    names: tuple[str, ...]
    kinds: npt.NDArray[np.int8]
    offset: IntArray
    n_value: IntArray
    edges: FloatArray
    edge_start: IntArray
    cats: IntArray
    cat_bin: IntArray
    cat_start: IntArray
    ref_counts: FloatArray
    ref_n: FloatArray
    df: IntArray

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def total_bins(self) -> int:
        return int(self.offset[-1])

    @functools.cached_property
    def kernel_args(self) -> tuple[Any, ...]:
        """The arrays the binning kernel reads, in its argument order: one row of
        integers per feature (fewer arguments: each costs the numba dispatcher ~0.1 us
        per call), the edges, the sorted categories, their bins, the category lookups."""
        f = self.n_features
        meta = np.zeros((f, 8), dtype=np.int64)
        meta[:, 0] = self.kinds
        meta[:, 1] = self.offset[:-1]
        meta[:, 2] = self.n_value
        meta[:, 3] = self.edge_start[:-1]
        meta[:, 4] = self.cat_start[:-1]
        meta[:, 5] = self.cat_start[1:]
        meta[:, 7] = -1  # no lookup table: binary search over the sorted categories
        lut: list[int] = []
        for j in np.flatnonzero(self.kinds == CATEGORICAL).tolist():
            codes = self.cats[self.cat_start[j] : self.cat_start[j + 1]]
            top = int(codes.max()) + 1 if codes.size else 0
            if top > LUT_MAX_CODE:
                continue
            # A dense code -> bin table (codes below the largest known one; the rest
            # are "other"): one load per value instead of a branchy binary search.
            table = np.full(top, self.n_value[j] - 1, dtype=np.int64)
            table[codes] = self.cat_bin[self.cat_start[j] : self.cat_start[j + 1]]
            meta[j, 6], meta[j, 7] = len(lut), top
            lut.extend(table.tolist())
        return (meta, self.edges, self.cats, self.cat_bin,
                np.asarray(lut or [0], dtype=np.int64))


def _numeric_entry(entry: Mapping[str, Any]) -> tuple[FloatArray, list[float]]:
    edges = np.asarray(entry["edges"], dtype=np.float64)
    counts = [float(c) for c in entry["counts"]] + [float(entry.get("missing", 0))]
    return edges, counts


def build_layout(
    entries: Sequence[tuple[str, Mapping[str, Any]]], reference_n: int | None = None
) -> BinLayout:
    """The layout of ``(name, reference entry)`` pairs in the shared reference shape.

    A score entry (``{"edges", "counts"}`` without ``kind``) is treated as numeric.
    ``reference_n`` is only a fallback for an empty block.
    """
    names: list[str] = []
    kinds: list[int] = []
    n_value: list[int] = []
    edges: list[float] = []
    edge_start = [0]
    cats: list[int] = []
    cat_bin: list[int] = []
    cat_start = [0]
    ref_counts: list[float] = []
    offset = [0]
    for name, entry in entries:
        kind = entry.get("kind", "numeric")
        names.append(name)
        if kind == "categorical":
            codes = [int(c) for c in entry["categories"]]
            order = np.argsort(codes, kind="stable")
            cats.extend(int(codes[i]) for i in order)
            cat_bin.extend(int(i) for i in order)
            counts = [float(c) for c in entry["counts"]]
            counts += [float(entry.get("other", 0)), float(entry.get("missing", 0))]
            kinds.append(CATEGORICAL)
            n_value.append(len(codes) + 1)
        else:
            e, counts = _numeric_entry(entry)
            edges.extend(float(x) for x in e)
            kinds.append(NUMERIC)
            n_value.append(max(e.size - 1, 1))
        edge_start.append(len(edges))
        cat_start.append(len(cats))
        ref_counts.extend(counts)
        offset.append(offset[-1] + len(counts))
    f = len(names)
    ref = np.asarray(ref_counts, dtype=np.float64)
    off = np.asarray(offset, dtype=np.int64)
    ref_n = np.add.reduceat(ref, off[:-1]) if f else np.zeros(0)
    if reference_n:
        ref_n = np.where(ref_n > 0, ref_n, float(reference_n))
    df = np.asarray([max(int(np.count_nonzero(ref[off[j] : off[j + 1]])) - 1, 0)
                     for j in range(f)], dtype=np.int64)
    return BinLayout(
        names=tuple(names),
        kinds=np.asarray(kinds, dtype=np.int8),
        offset=off,
        n_value=np.asarray(n_value, dtype=np.int64),
        edges=np.asarray(edges, dtype=np.float64),
        edge_start=np.asarray(edge_start, dtype=np.int64),
        cats=np.asarray(cats, dtype=np.int64),
        cat_bin=np.asarray(cat_bin, dtype=np.int64),
        cat_start=np.asarray(cat_start, dtype=np.int64),
        ref_counts=ref,
        ref_n=np.asarray(ref_n, dtype=np.float64),
        df=df,
    )


@numba.njit(cache=True, nogil=True)
def _accumulate(  # pragma: no cover - compiled
    X: Any, S: Any, r0: int, r1: int, meta: Any, edges: Any, cats: Any, cat_bin: Any,
    lut: Any, counts: Any,
) -> None:
    # Feature f < X.shape[1] is column f of X; the next one (the score) is S.
    # Block by block of BLOCK_ROWS rows: the block is transposed once into a small
    # feature-major buffer (rows of X are read in order, which the prefetcher follows,
    # instead of one strided pass over X per feature), then each feature's column is
    # binned while it is in L1. A numeric bin is the number of inner edges <= x,
    # counted edge by edge over the column (a branch-free loop LLVM vectorises; no
    # per-value binary search). NaN compares false everywhere and goes to the missing
    # bin. The comparisons are exact: no fastmath.
    n_x = X.shape[1]
    n_f = meta.shape[0]
    buf = np.empty((n_f, BLOCK_ROWS), dtype=np.float64)
    for b0 in range(r0, r1, BLOCK_ROWS):
        m = min(BLOCK_ROWS, r1 - b0)
        for i in range(m):
            for f in range(n_x):
                buf[f, i] = X[b0 + i, f]
        if n_x < n_f:
            for i in range(m):
                buf[n_x, i] = S[b0 + i]
        for f in range(n_f):
            off = meta[f, 1]
            nv = meta[f, 2]
            col = buf[f]
            if meta[f, 0] == 0:
                # c_k = #(x >= e_k) per inner edge, a vectorised sum of comparisons;
                # bin k holds c_k - c_{k+1} (edges are non-decreasing, validated), so
                # no per-value index or scatter at all.
                s = meta[f, 3]
                nan = 0
                for i in range(m):
                    nan += col[i] != col[i]
                above = m - nan
                for k in range(1, nv):
                    e = edges[s + k]
                    c = 0
                    for i in range(m):
                        c += col[i] >= e
                    counts[off + k - 1] += above - c
                    above = c
                counts[off + nv - 1] += above
                counts[off + nv] += nan
                continue
            top = meta[f, 7]
            for i in range(m):
                x = col[i]
                b = nv  # missing: NaN, negative, infinite and huge codes, which
                # LightGBM's int cast turns into negative codes and treats as missing
                if x >= 0.0 and x < 4.611686018427388e18:
                    code = np.int64(x)
                    if top >= 0:
                        b = lut[meta[f, 6] + code] if code < top else nv - 1
                    else:
                        b = nv - 1  # other, unless found
                        lo = meta[f, 4]
                        hi = meta[f, 5]
                        while lo < hi:
                            mid = (lo + hi) >> 1
                            if cats[mid] < code:
                                lo = mid + 1
                            else:
                                hi = mid
                        if lo < meta[f, 5] and cats[lo] == code:
                            b = cat_bin[lo]
                counts[off + b] += 1


_NO_SCORES = np.zeros(0)


def accumulate(
    layout: BinLayout, X: FloatArray, counts: IntArray, r0: int = 0, r1: int | None = None,
    scores: FloatArray | None = None,
) -> None:
    """Add rows ``r0:r1`` to ``counts`` (the flat bins of ``layout``).

    ``X`` holds the layout's features in order, one column each (C-contiguous float64);
    with ``scores`` (1-D), ``X`` holds all but the last feature and ``scores`` is it.
    """
    r1 = X.shape[0] if r1 is None else r1
    s = _NO_SCORES if scores is None else scores
    width = layout.n_features - (scores is not None)
    # The kernel does not bounds-check: a wrong shape would read other memory.
    if X.ndim != 2 or X.shape[1] != width or not 0 <= r0 <= r1 <= X.shape[0] or (
        scores is not None and (s.ndim != 1 or s.shape[0] < r1)
    ):
        raise ValueError(f"X of shape {X.shape} (rows {r0}:{r1}) does not fit "
                         f"{layout.n_features} features")
    _accumulate(X, s, r0, r1, *layout.kernel_args, counts)  # type: ignore[call-arg]


@numba.njit(cache=True, nogil=True)
def _page_hinkley(  # pragma: no cover - compiled
    x: Any, r0: int, r1: int, state: Any, mu: float, sigma: float, delta: float,
    threshold: float, min_instances: float,
) -> int:
    alarms = 0
    for i in range(r0, r1):
        v = (x[i] - mu) / sigma
        if np.isnan(v):
            continue
        state[0] += 1.0
        state[1] += (v - state[1]) / state[0]
        state[2] += v - state[1] - delta
        state[3] = min(state[3], state[2])
        state[4] += v - state[1] + delta
        state[5] = max(state[5], state[4])
        if state[0] >= min_instances and (
            state[2] - state[3] > threshold or state[5] - state[4] > threshold
        ):
            alarms += 1
            for k in range(6):
                state[k] = 0.0
    return alarms


def page_hinkley(
    x: FloatArray, state: FloatArray, delta: float, threshold: float, min_instances: int = 30
) -> int:
    """Run a two-sided Page-Hinkley test over ``x``; return how many changes it detected.

    ``state`` (6 floats: count, running mean, cumulative sums and their extrema) carries
    over between calls; after a detection the detector restarts, as river's does.
    """
    return int(_page_hinkley(x, 0, x.shape[0], state, 0.0, 1.0, float(delta),
                             float(threshold), float(min_instances)))


@numba.njit(cache=True, nogil=True)
def _update(  # pragma: no cover - compiled
    X: Any, S: Any, codes: Any, mult: Any, r0: int, r1: int, meta: Any, edges: Any,
    cats: Any, cat_bin: Any, lut: Any, ring: Any, ringf: Any, cur: int, n_dec: int,
    ph: Any, now: float,
) -> int:
    # Everything a batch adds to the current sub-window (ring row ``cur``) and to the
    # running window (the ring's last row), in one call: each call through the numba
    # dispatcher and each numpy operation in the caller costs microseconds when the
    # scorer has just evicted the caches. The batch is counted in a fresh row first
    # (it stays in L1), then added to both.
    tb = ring.shape[1] - n_dec - 2
    if ring[cur, tb + n_dec] == 0:
        ringf[cur, 0] = now  # the sub-window's first event
    slot = np.zeros(ring.shape[1], dtype=np.int64)
    _accumulate(X, S, r0, r1, meta, edges, cats, cat_bin, lut, slot[:tb])
    if codes.shape[0] > 0:
        k = tb + n_dec - 1  # the "other" slot
        for i in range(r0, r1):
            c = codes[i]
            slot[tb + c if 0 <= c < n_dec - 1 else k] += 1
    if mult.shape[0] > 0:
        total = 0.0
        count = 0
        for i in range(r0, r1):
            v = mult[i]
            if np.isfinite(v):
                total += v
                count += 1
        ringf[cur, 1] += total
        ringf[cur, 2] += count
    slot[tb + n_dec] += r1 - r0
    alarms = 0
    if ph[5] > 0:
        alarms = _page_hinkley(S, r0, r1, ph[6:], ph[0], ph[1], ph[2], ph[3], ph[4])
        slot[tb + n_dec + 1] += alarms
    last = ring.shape[0] - 1
    for j in range(ring.shape[1]):
        ring[cur, j] += slot[j]
        ring[last, j] += slot[j]
    return alarms


_NONE_I = np.zeros(0, dtype=np.int64)
_NONE_F = np.zeros(0)

BatchCounter = Callable[[FloatArray, FloatArray, int, int, int, float, Any, Any], int]


def batch_counter(
    layout: BinLayout, ring: IntArray, ringf: FloatArray, n_decisions: int, ph: FloatArray,
) -> BatchCounter:
    """``add(X, scores, r0, r1, cur, now, codes, multipliers)``: one compiled pass adding
    rows ``r0:r1`` of a scored batch to ring row ``cur`` and to the window row (the
    ring's last: the sum of the others); returns the Page-Hinkley detections.

    ``X`` holds the layout's features but the last, ``scores`` is the last. A ring row
    holds the flat bin counts, ``n_decisions`` decision counts (integer ``codes``
    outside ``0..n_decisions-2`` count in the last, "other"), the events and the
    Page-Hinkley detections; its ``ringf`` row (first event time, set to ``now`` when
    the row was empty; sum and count of the finite price ``multipliers``). ``ph`` =
    ``[mu, sigma, delta, threshold, min_instances, enabled, *six state values]`` runs
    Page-Hinkley on the standardised scores. ``codes`` / ``multipliers``: ``None`` or
    one per row. The arrays given here are checked once and bound; ``add`` checks only
    what changes per batch (each check and argument costs microseconds on a cache that
    the scorer has just evicted).
    """
    if (ring.ndim != 2 or ring.shape[0] < 2 or ring.dtype != np.int64
            or ring.shape[1] != layout.total_bins + n_decisions + 2 or ph.shape != (12,)
            or ringf.shape != (ring.shape[0] - 1, 3) or n_decisions < 1):
        raise ValueError(f"ring of shape {ring.shape} does not fit {layout.total_bins} bins "
                         f"and {n_decisions} decisions")
    meta, edges, cats, cat_bin, lut = layout.kernel_args
    width, slots, kernel = layout.n_features - 1, ring.shape[0] - 1, _update

    def add(X: FloatArray, scores: FloatArray, r0: int, r1: int, cur: int, now: float,
            codes: Any = None, multipliers: Any = None) -> int:
        if (X.ndim != 2 or X.shape[1] != width or scores.ndim != 1
                or not 0 <= r0 <= r1 <= min(X.shape[0], scores.shape[0])
                or not 0 <= cur < slots
                or (codes is not None and (codes.ndim != 1 or codes.shape[0] < r1))
                or (multipliers is not None and (multipliers.ndim != 1
                                                 or multipliers.shape[0] < r1))):
            # The kernel does not bounds-check: a wrong shape would read other memory.
            raise ValueError(f"X of shape {X.shape} (rows {r0}:{r1}) does not fit "
                             f"{width} features and a score")
        return int(kernel(  # type: ignore[no-any-return]
            X, scores, _NONE_I if codes is None else codes,
            _NONE_F if multipliers is None else multipliers, r0, r1, meta, edges, cats,
            cat_bin, lut, ring, ringf, cur, n_decisions, ph, now))

    return add
