"""The drift monitor's ring of sub-windows, updated and closed by compiled code.

A ring is an int64 array: one row per sub-window (the flat bin counts of
``stream.drift_stats``' layout, then decision counts, events, Page-Hinkley detections)
and a last row, the window, kept as the running sum of the others (a batch is added to
both; a sub-window leaving the window is subtracted), so a close reads one row, not all
of them. A float array ``ringf`` holds per sub-window its first event time and the sum
and count of price multipliers.

``ring_stepper`` binds the ring and the reference once and returns ``step``: one numba
call per batch that adds the batch to the ring, and closes every sub-window the batch
fills (statistics of the window, see ``stream.drift_window``), writing one statistics
table per close. Measured on a 2-core box shared with other work, each call through the
numba dispatcher and each numpy operation costs several microseconds when the scorer has
just evicted the caches (a plain Python call ~6 us), hence one call per batch, bound
arguments, and checks done once. ``window_closer`` closes a sub-window outside a batch
(time-based windows, shutdown).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from stream.drift_stats import BinLayout, _accumulate, _page_hinkley
from stream.drift_window import PSEUDO_COUNT, _stats

__all__ = ["MAX_CLOSES", "RingStepper", "WindowCloser", "ring_stepper", "window_closer"]

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


@numba.njit(cache=True, nogil=True)
def _step(  # pragma: no cover - compiled
    X: Any, S: Any, codes: Any, mult: Any, r0: int, now: float, meta: Any, edges: Any,
    cats: Any, cat_bin: Any, lut: Any, ring: Any, ringf: Any, state: Any, ph: Any,
    ref: Any, ref_n: Any, quantiles: Any, offset: Any, n_value: Any, kinds: Any,
    edge_start: Any, tables: Any, extras: Any,
) -> tuple[int, int]:
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
    slots = ring.shape[0] - 1
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


_NONE_I = np.zeros(0, dtype=np.int64)
_NONE_F = np.zeros(0)

RingStepper = Callable[[Any, Any, int, Any, Any, float], tuple[int, int]]
WindowCloser = Callable[[int, int], None]


def _check(layout: BinLayout, ring: IntArray, ringf: FloatArray, n_decisions: int,
           quantiles: FloatArray, extras: FloatArray) -> None:
    tb = layout.total_bins
    if (ring.ndim != 2 or ring.shape[0] < 2 or ring.dtype != np.int64
            or ring.shape[1] != tb + n_decisions + 2 or n_decisions < 1
            or ringf.shape != (ring.shape[0] - 1, 3) or ringf.dtype != np.float64
            or extras.shape[-1] != 4 + n_decisions + 2
            or quantiles.shape != (layout.n_features,)):
        raise ValueError(f"ring of shape {ring.shape} does not fit {tb} bins and "
                         f"{n_decisions} decisions")


def ring_stepper(
    layout: BinLayout, ring: IntArray, ringf: FloatArray, state: IntArray, ph: FloatArray,
    quantiles: FloatArray, tables: FloatArray, extras: FloatArray,
) -> RingStepper:
    """``step(X, scores, r0, codes, multipliers, now) -> (r, closes)``: add rows ``r0:r``
    of a scored batch to the ring, closing every sub-window they fill.

    ``X``: float rows x the layout's features but the last; ``scores``: the last, one
    per row; ``codes`` (integer decision codes, outside ``0..n-2`` counted as "other")
    and ``multipliers`` (finite ones summed): ``None`` or one per row. ``state`` =
    ``[current row, events in it, events per sub-window (0: none), decision slots]``,
    updated in place. ``ph`` = ``[mu, sigma, delta, threshold, min_instances, enabled,
    *six state values]`` (Page-Hinkley on the standardised scores). Close ``k`` of the
    call writes ``tables[k]`` (8 x features, ``WindowStats.from_table``) and
    ``extras[k]`` (window start or ``inf``, multiplier sum and count, Page-Hinkley
    detections of the closed sub-window, then the window's decision counts, events,
    detections). ``r < len(X)`` when ``tables`` ran out: call again from ``r``.
    Raises ``ValueError`` when the batch's shapes do not fit.
    """
    _check(layout, ring, ringf, int(state[N_DEC]), quantiles, extras)
    if (state.shape != (4,) or ph.shape != (12,) or tables.ndim != 3
            or tables.shape[1:] != (8, layout.n_features) or extras.shape[0] != tables.shape[0]
            or not 0 <= state[CUR] < ring.shape[0] - 1):
        raise ValueError("ring state, Page-Hinkley or table arrays of the wrong shape")
    fixed = (*layout.kernel_args, ring, ringf, state, ph, layout.ref_counts, layout.ref_n,
             quantiles, layout.offset, layout.n_value, layout.kinds, layout.edge_start,
             tables, extras)
    kernel = _step

    def step(X: Any, scores: Any, r0: int, codes: Any, multipliers: Any,
             now: float) -> tuple[int, int]:
        r, closes = kernel(X, scores, _NONE_I if codes is None else codes,
                           _NONE_F if multipliers is None else multipliers, r0, now, *fixed)
        if r < 0:
            raise ValueError(f"batch of shape {X.shape} with {scores.shape[0]} scores does "
                             f"not fit {layout.n_features - 1} features")
        return r, closes

    return step


def window_closer(
    layout: BinLayout, ring: IntArray, ringf: FloatArray, n_decisions: int,
    quantiles: FloatArray, table: FloatArray, extra: FloatArray,
) -> WindowCloser:
    """``close(cur, clear)``: the statistics of the window into ``table`` (8 x features)
    and ``extra`` (as ``ring_stepper``'s, ``cur`` the closing row), then row ``clear``
    (if >= 0) leaves the window and is emptied."""
    _check(layout, ring, ringf, n_decisions, quantiles, extra)
    if table.shape != (8, layout.n_features) or extra.ndim != 1:
        raise ValueError("table or extra of the wrong shape")
    slots, kernel, tb = ring.shape[0] - 1, _close_into, layout.total_bins
    fixed = (layout.ref_counts, layout.ref_n, quantiles, layout.offset, layout.n_value,
             layout.kinds, layout.edges, layout.edge_start, PSEUDO_COUNT, table.T)

    def close(cur: int, clear: int) -> None:
        if not 0 <= cur < slots or clear >= slots:
            raise ValueError(f"ring rows {cur}, {clear} outside 0..{slots - 1}")
        kernel(ring, ringf, extra, tb, *fixed, cur, clear)

    return close
