"""Drift binning: the bin layout from the reference and the compiled per-batch pass.

Everything the monitor needs per batch is one call of a numba kernel that adds a batch's
rows to a flat array of bin counts (one block of bins per feature, the last bin of each
block counting missing values), plus decision codes and Page-Hinkley. Statistics are
computed when a window closes (``stream.drift.window``), over the flat counts (O(bins)),
so their cost does not grow with the number of events.

Binning follows the reference rule of ``scorers.refstats``: numeric bin ``i`` is
``[e_i, e_{i+1})``, values below ``e_0`` go to bin 0, values at or above ``e_B`` to the
last bin, NaN to the missing bin. Categorical values are truncated to integer codes as
LightGBM reads them; NaN, negative, infinite and huge (>= 2^62) codes are missing, codes
outside the reference's categories count in the ``other`` bin.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from features import jitcache

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = [
    "CATEGORICAL",
    "NUMERIC",
    "BinLayout",
    "accumulate",
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
