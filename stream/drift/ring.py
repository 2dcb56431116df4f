"""The drift monitor's ring of sub-windows, updated and closed by compiled code.

A ring is an int64 array: one row per sub-window (the flat bin counts of
``stream.drift.stats``' layout, then decision counts, events, Page-Hinkley detections)
and a last row, the window, kept as the running sum of the others (a batch is added to
both; a sub-window leaving the window is subtracted), so a close reads one row, not all
of them. A float array ``ringf`` holds per sub-window its first event time and the sum
and count of price multipliers.

``ring_arrays`` allocates the ring, its state and the close outputs as views of two flat
buffers (one int64, one float64, with the reference), and ``step_kernel`` is one numba
call per batch, taking the two buffers whole, that adds the batch to the ring and closes
every sub-window the batch fills (statistics of the window, see ``stream.drift.window``),
writing one statistics table per close. Measured on a 2-core box shared with other work,
each call through the numba dispatcher, each array argument it unboxes and each numpy
operation cost microseconds when the scorer has just evicted the caches (a plain Python
call ~6 us), hence one call per batch, two buffers instead of 18 arrays, no checks in
Python (the kernel is compiled eagerly for the worker's argument types only and checks
the shapes itself). ``window_closer`` closes
a sub-window outside a batch (time-based windows, shutdown).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from numba import types

from features import jitcache
from stream.drift.stats import BinLayout, _accumulate, _page_hinkley
from stream.drift.window import PSEUDO_COUNT, _stats

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = ["MAX_CLOSES", "RingArrays", "WindowCloser", "ring_arrays", "step_kernel",
           "window_closer"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Closes one ``step`` call can write (more: the caller calls again for the rest).
MAX_CLOSES = 4
# ``state`` of a stepper: current ring row, events in it, events per sub-window (0: no
# count rule), decision slots.
CUR, CUR_N, SUB, N_DEC = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
def _add_rows(  # pragma: no cover - compiled
    X: Any, S: Any, codes: Any, mult: Any, r0: int, r1: int, meta: Any, edges: Any,
    cats: Any, cat_bin: Any, lut: Any, ring: Any, ringf: Any, cur: int, n_dec: int,
    ph: Any, now: float,
) -> None:
    # Rows r0:r1 into ring row ``cur`` and the window row. The rows are counted in a
    # fresh row first (it stays in L1), then added to both.
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
    if ph[5] > 0:
        slot[tb + n_dec + 1] += _page_hinkley(S, r0, r1, ph[6:], ph[0], ph[1], ph[2], ph[3],
                                              ph[4])
    last = ring.shape[0] - 1
    for j in range(ring.shape[1]):
        ring[cur, j] += slot[j]
        ring[last, j] += slot[j]


@numba.njit(cache=True, nogil=True)
def _close_into(  # pragma: no cover - compiled
    ring: Any, ringf: Any, extra: Any, tb: int, ref: Any, ref_n: Any, quantiles: Any,
    offset: Any, n_value: Any, kinds: Any, edges: Any, edge_start: Any, pseudo: float,
    out: Any, cur: int, clear: int,
) -> None:
    # Statistics of the window row into ``out`` (features x 8), the record's other
    # numbers into ``extra``; then row ``clear`` leaves the window and is emptied.
    start = np.inf
    msum = 0.0
    mcount = 0.0
    n_col = ring.shape[1] - 2  # the events column
    for r in range(ringf.shape[0]):
        if ring[r, n_col] > 0:
            start = min(start, ringf[r, 0])
        msum += ringf[r, 1]
        mcount += ringf[r, 2]
    extra[0] = start
    extra[1] = msum
    extra[2] = mcount
    extra[3] = ring[cur, n_col + 1]  # Page-Hinkley detections of the closing sub-window
    window = ring[ring.shape[0] - 1]
    for j in range(tb, ring.shape[1]):
        extra[4 + j - tb] = window[j]  # the window's decision counts, events, detections
    _stats(window[:tb], ref, ref_n, quantiles, offset, n_value, kinds, edges, edge_start,
           pseudo, out)
    if clear >= 0:
        for j in range(ring.shape[1]):
            window[j] -= ring[clear, j]
            ring[clear, j] = 0
        for j in range(3):
            ringf[clear, j] = 0.0


# The packed integer buffer opens with a header: [start, end) of each segment (the
# segments' order below, integer ones in ``ints``, float ones in ``floats``), then the
# shapes the kernel reshapes with.
(_META, _CATS, _CAT_BIN, _LUT, _OFFSET, _N_VALUE, _EDGE_START, _KINDS, _STATE, _RING,
 _EDGES, _REF, _REF_N, _QUANT, _PH, _RINGF, _TABLES, _EXTRAS) = range(18)
_H_NF, _H_ROWS, _H_COLS, _H_CLOSES, _H_XCOLS = range(36, 41)
_HEADER = 48


@numba.njit(cache=True, nogil=True, inline="always")
def _seg(buf: Any, ib: Any, k: int) -> Any:  # pragma: no cover - compiled
    return buf[ib[2 * k] : ib[2 * k + 1]]


# The only argument types the step is compiled for (eagerly, so nothing compiles on a
# batch, and any other type is a TypeError the caller answers by converting): float64
# arrays of any layout (the worker's feature matrix is a column selection, Fortran-
# ordered: read in place, not copied), outcome codes as int8 (the fraud policy's) or
# int64. (numba remembers a C-contiguous argument's match to these after its first call.)
_STEP_SIGNATURES = [
    types.UniTuple(types.int64, 2)(
        types.float64[:, :], types.float64[:], codes, types.float64[:], types.int64,
        types.float64, types.int64[::1], types.float64[::1])
    for codes in (types.int8[:], types.int64[:])
]


@numba.njit(_STEP_SIGNATURES, cache=True, nogil=True)
def _step(  # pragma: no cover - compiled
    X: Any, S: Any, codes: Any, mult: Any, r0: int, now: float, ib: Any, fb: Any,
) -> tuple[int, int]:
    # Views of the two packed buffers (no copies): everything the batch needs.
    nf = ib[_H_NF]
    slots = ib[_H_ROWS] - 1
    meta = _seg(ib, ib, _META).reshape((nf, 8))
    cats = _seg(ib, ib, _CATS)
    cat_bin = _seg(ib, ib, _CAT_BIN)
    lut = _seg(ib, ib, _LUT)
    offset = _seg(ib, ib, _OFFSET)
    n_value = _seg(ib, ib, _N_VALUE)
    edge_start = _seg(ib, ib, _EDGE_START)
    kinds = _seg(ib, ib, _KINDS)
    state = _seg(ib, ib, _STATE)
    ring = _seg(ib, ib, _RING).reshape((slots + 1, ib[_H_COLS]))
    edges = _seg(fb, ib, _EDGES)
    ref = _seg(fb, ib, _REF)
    ref_n = _seg(fb, ib, _REF_N)
    quantiles = _seg(fb, ib, _QUANT)
    ph = _seg(fb, ib, _PH)
    ringf = _seg(fb, ib, _RINGF).reshape((slots, 3))
    tables = _seg(fb, ib, _TABLES).reshape((ib[_H_CLOSES], 8, nf))
    extras = _seg(fb, ib, _EXTRAS).reshape((ib[_H_CLOSES], ib[_H_XCOLS]))
    # The shapes are checked here, in compiled code (cheaper than in the caller).
    rows = X.shape[0]
    if (X.shape[1] != meta.shape[0] - 1 or S.shape[0] != rows or r0 < 0
            or (codes.shape[0] != 0 and codes.shape[0] != rows)
            or (mult.shape[0] != 0 and mult.shape[0] != rows)):
        return -1, 0
    cur = state[CUR]
    cur_n = state[CUR_N]
    sub = state[SUB]
    n_dec = state[N_DEC]
    tb = ring.shape[1] - n_dec - 2
    r = r0
    closes = 0
    while r < rows:
        take = rows - r if sub == 0 else min(rows - r, sub - cur_n)
        if sub and cur_n + take >= sub and closes == tables.shape[0]:
            break  # no table left for this close: the caller calls again
        _add_rows(X, S, codes, mult, r, r + take, meta, edges, cats, cat_bin, lut, ring,
                  ringf, cur, n_dec, ph, now)
        r += take
        cur_n += take
        if sub and cur_n >= sub:
            nxt = (cur + 1) % slots
            _close_into(ring, ringf, extras[closes], tb, ref, ref_n, quantiles, offset,
                        n_value, kinds, edges, edge_start, PSEUDO_COUNT, tables[closes].T,
                        cur, nxt)
            closes += 1
            cur = nxt
            cur_n = 0
    state[CUR] = cur
    state[CUR_N] = cur_n
    return r, closes


@dataclass(frozen=True)
class RingArrays:
    """The ring, its state and the close outputs of one monitor, as views of two flat
    buffers (``ints``, ``floats``) that the per-batch kernel takes whole: 8 arguments
    instead of 24. Measured: each array argument costs the numba dispatcher ~0.08 us
    warm and ~0.6 us right after the scorer has evicted the caches (a 24-array call
    ~23 us then, a 9-array one ~15 us).

    ``ring`` (sub-windows + 1 rows, int64) and ``ringf`` (sub-windows x 3) as in the
    module docstring; ``state`` = ``[current row, events in it, events per sub-window
    (0: none), decision slots]``; ``ph`` = ``[mu, sigma, delta, threshold,
    min_instances, enabled, *six state values]``; close ``k`` of a call writes
    ``tables[k]`` (8 x features) and ``extras[k]``.
    """

    ints: IntArray
    floats: FloatArray
    ring: IntArray
    ringf: FloatArray
    state: IntArray
    ph: FloatArray
    tables: FloatArray
    extras: FloatArray


def ring_arrays(layout: BinLayout, sub_windows: int, n_decisions: int,
                quantiles: FloatArray, max_closes: int = MAX_CLOSES) -> RingArrays:
    """Zeroed ring arrays for ``sub_windows`` sub-windows and ``n_decisions`` decision
    slots (outcomes + "other"), with the layout's reference and ``quantiles`` (per
    feature) copied in; ``state[N_DEC]`` is set, the rest of ``state`` and ``ph`` is
    the caller's."""
    if sub_windows < 1 or n_decisions < 1 or quantiles.shape != (layout.n_features,):
        raise ValueError("ring arrays need >= 1 sub-window, >= 1 decision slot and a "
                         "quantile per feature")
    f, tb = layout.n_features, layout.total_bins
    cols, xcols = tb + n_decisions + 2, 4 + n_decisions + 2
    meta, edges, cats, cat_bin, lut = layout.kernel_args
    int_parts = [meta.ravel(), cats, cat_bin, lut, layout.offset, layout.n_value,
                 layout.edge_start, layout.kinds.astype(np.int64), np.zeros(4, np.int64),
                 np.zeros((sub_windows + 1) * cols, np.int64)]
    float_parts = [edges, layout.ref_counts, layout.ref_n, quantiles, np.zeros(12),
                   np.zeros(sub_windows * 3), np.zeros(max_closes * 8 * f),
                   np.zeros(max_closes * xcols)]
    header = np.zeros(_HEADER, dtype=np.int64)
    pos = _HEADER
    for k, part in enumerate(int_parts):
        header[2 * k], header[2 * k + 1] = pos, pos + part.size
        pos += part.size
    fpos = 0
    for k, part in enumerate(float_parts, start=len(int_parts)):
        header[2 * k], header[2 * k + 1] = fpos, fpos + part.size
        fpos += part.size
    header[[_H_NF, _H_ROWS, _H_COLS, _H_CLOSES, _H_XCOLS]] = [
        f, sub_windows + 1, cols, max_closes, xcols]
    ints = np.concatenate([header, *int_parts]).astype(np.int64)
    floats = np.concatenate(float_parts).astype(np.float64)

    def view(buf: Any, k: int, shape: tuple[int, ...]) -> Any:
        return buf[header[2 * k] : header[2 * k + 1]].reshape(shape)

    arrays = RingArrays(
        ints=ints, floats=floats, ring=view(ints, _RING, (sub_windows + 1, cols)),
        ringf=view(floats, _RINGF, (sub_windows, 3)), state=view(ints, _STATE, (4,)),
        ph=view(floats, _PH, (12,)), tables=view(floats, _TABLES, (max_closes, 8, f)),
        extras=view(floats, _EXTRAS, (max_closes, xcols)))
    arrays.state[N_DEC] = n_decisions
    return arrays


# ``step_kernel(X, scores, codes, multipliers, r0, now, ints, floats) -> (r, closes)``:
# add rows ``r0:r`` of a scored batch to the ring of ``ring_arrays``' two buffers,
# closing every sub-window they fill. ``X``: float rows x the layout's features but the
# last; ``scores``: the last, one per row; ``codes`` (int8 or int64 decision codes,
# outside ``0..n-2`` counted as "other") and ``multipliers`` (finite ones summed): empty
# or one per row. Page-Hinkley runs on the standardised scores. Close ``k`` of the call
# writes ``tables[k]`` (``WindowStats.from_table``) and ``extras[k]`` (window start or
# ``inf``, multiplier sum and count, Page-Hinkley detections of the closed sub-window,
# then the window's decision counts, events, detections); ``r < len(X)`` when the tables
# ran out: call again from ``r``; ``r = -1`` (nothing counted) when the shapes do not
# fit; other argument types raise TypeError (compiled for these only).
step_kernel = _step

WindowCloser = Callable[[int, int], None]


def _check(layout: BinLayout, arrays: RingArrays) -> None:
    n_dec = int(arrays.state[N_DEC])
    ring, tb = arrays.ring, layout.total_bins
    if (ring.ndim != 2 or ring.shape[0] < 2 or ring.shape[1] != tb + n_dec + 2 or n_dec < 1
            or arrays.tables.shape[1:] != (8, layout.n_features)
            or arrays.extras.shape != (arrays.tables.shape[0], 4 + n_dec + 2)
            or not 0 <= arrays.state[CUR] < ring.shape[0] - 1
            or int(arrays.ints[_H_NF]) != layout.n_features):
        raise ValueError(f"ring arrays of shape {ring.shape} do not fit {tb} bins and "
                         f"{n_dec} decisions")


def window_closer(layout: BinLayout, arrays: RingArrays) -> WindowCloser:
    """``close(cur, clear)``: the statistics of the window into ``tables[0]`` and
    ``extras[0]`` (as ``step_kernel``'s, ``cur`` the closing row), then row ``clear``
    (if >= 0) leaves the window and is emptied."""
    _check(layout, arrays)
    ring, ringf, slots, kernel = arrays.ring, arrays.ringf, arrays.ring.shape[0] - 1, _close_into
    tb = layout.total_bins
    quantiles = arrays.floats[arrays.ints[2 * _QUANT] : arrays.ints[2 * _QUANT + 1]]
    fixed = (layout.ref_counts, layout.ref_n, quantiles, layout.offset, layout.n_value,
             layout.kinds, layout.edges, layout.edge_start, PSEUDO_COUNT,
             arrays.tables[0].T)
    extra = arrays.extras[0]

    def close(cur: int, clear: int) -> None:
        if not 0 <= cur < slots or clear >= slots:
            raise ValueError(f"ring rows {cur}, {clear} outside 0..{slots - 1}")
        kernel(ring, ringf, extra, tb, *fixed, cur, clear)

    return close
