"""Candidate sweeps: one event scored under several values of a few columns, shared work once.

A pricing decision scores each event at several candidate prices: rows that differ only
in a few columns. QuickScorer's state is an AND of per-feature leaf masks, so the masks
of every column the candidates do not change are built once per event, and each
candidate only copies them, applies its own columns' masks and reads the exit leaves.
Leaf values are still added per candidate in tree order, so every score is bit-identical
to scoring the expanded rows (and to ``Booster.predict``).
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from features import jitcache
from scorers.kernels import (
    ALL,
    BLOCK,
    KZ,
    PAD_MIN,
    block_leaves,
    cat_goes_left,
    cat_row,
    finish_rows,
    masked_and_block,
    unpack,
)

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = ["expand", "qs_sweep"]

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]


def expand(X: F64, cols: npt.NDArray[np.int64], values: F64) -> F64:
    """The rows a sweep stands for: event i's row with ``cols`` set to ``values[i, j]``,
    candidate j, as rows ``i * C + j`` (the reference, and the path of walked models)."""
    n, c = values.shape[0], values.shape[1]
    rows = np.repeat(X, c, axis=0)
    rows[:, cols] = values.reshape(n * c, -1)
    return rows


@nb.njit(cache=True, nogil=True)
def _block_feature(vb: U64, f: int, xs: F64, xb: F64, thr: F64, e_tree: U64, e_mask: U64,
                   starts: U64, zflag: npt.NDArray[np.uint8], cat_info: U64, cb: np.uint64,
                   catbits: npt.NDArray[np.uint32]) -> None:
    """Apply feature ``f`` with lane values ``xs`` to the 16-lane block ``vb`` [tree, lane]
    (the per-feature step of ``kernels._qs_block``: one threshold scan for all lanes)."""
    ub = np.uint64(BLOCK)
    xmax = -np.inf
    for r in range(BLOCK):
        xo = xs[r]
        ur = np.uint64(r)
        if np.isnan(xo):
            for e in range(starts[1, f], starts[1, f + 1]):
                vb[e_tree[e] * ub + ur] &= e_mask[e]
            xb[r] = np.nan
        elif abs(xo) <= KZ and zflag[f]:
            for e in range(starts[2, f], starts[2, f + 1]):
                vb[e_tree[e] * ub + ur] &= e_mask[e]
            xb[r] = np.nan
        else:
            xb[r] = 0.0 if abs(xo) <= KZ else xo
            xmax = max(xmax, xb[r])
        for e in range(starts[3, f], starts[3, f + 1]):
            j = e - cb
            if not cat_goes_left(xo, catbits, cat_info[j, 0], cat_info[j, 1]):
                vb[e_tree[e] * ub + ur] &= e_mask[e]
    for e in range(starts[0, f], starts[0, f + 1]):
        t = thr[e]
        if t >= xmax:
            break
        masked_and_block(vb, e_tree[e] * ub, xb, t, e_mask[e])


@nb.njit(cache=True, nogil=True)
def _block_table(vb: U64, q: int, xs: F64, ct_info: U64, ct_trees: U64, ct_tab: U64) -> None:
    """Apply per-category table ``q`` with lane values ``xs`` to the block ``vb``."""
    ub = np.uint64(BLOCK)
    toff = ct_info[q, 4]
    nct = ct_info[q, 2]
    for r in range(BLOCK):
        row = cat_row(xs[r], ct_info[q, 1], nct, ct_info[q, 3])
        ur = np.uint64(r)
        for k in range(nct):
            vb[ct_trees[toff + k] * ub + ur] &= ct_tab[row + k]


@nb.njit(cache=True, nogil=True)
def _event_scalar(v: U64, lane: int, x: F64, moved: npt.NDArray[np.bool_], thr: F64,
                  e_tree: U64, e_mask: U64, starts: U64, zflag: npt.NDArray[np.uint8],
                  cat_info: U64, cb: np.uint64, catbits: npt.NDArray[np.uint32],
                  ct_info: U64, ct_trees: U64, ct_tab: U64) -> None:
    """Lane ``lane`` of ``v``: row ``x`` through the columns no candidate changes, alone
    (the early-exit scan of ``kernels._qs_row``; cheaper than a block for a few events)."""
    ub = np.uint64(BLOCK)
    ul = np.uint64(lane)
    for t in range(v.shape[0] // BLOCK):
        v[np.uint64(t) * ub + ul] = ALL
    for f in range(x.shape[0]):
        if moved[f]:
            continue
        xo = x[f]
        if np.isnan(xo):
            for e in range(starts[1, f], starts[1, f + 1]):
                v[e_tree[e] * ub + ul] &= e_mask[e]
        elif abs(xo) <= KZ and zflag[f]:
            for e in range(starts[2, f], starts[2, f + 1]):
                v[e_tree[e] * ub + ul] &= e_mask[e]
        else:
            xv = 0.0 if abs(xo) <= KZ else xo
            e = starts[0, f]
            end = starts[0, f + 1]
            while e < end and thr[e] < xv:
                v[e_tree[e] * ub + ul] &= e_mask[e]
                e += np.uint64(1)
        for e in range(starts[3, f], starts[3, f + 1]):
            j = e - cb
            if not cat_goes_left(xo, catbits, cat_info[j, 0], cat_info[j, 1]):
                v[e_tree[e] * ub + ul] &= e_mask[e]
    for q in range(ct_info.shape[0]):
        fq = ct_info[q, 0]
        if not moved[fq]:
            row = cat_row(x[fq], ct_info[q, 1], ct_info[q, 2], ct_info[q, 3])
            toff = ct_info[q, 4]
            for k in range(ct_info[q, 2]):
                v[ct_trees[toff + k] * ub + ul] &= ct_tab[row + k]


@nb.njit(cache=True, nogil=True)
def _events_block(v: U64, X: F64, i0: int, events: int, moved: npt.NDArray[np.bool_],
                  xs: F64, xb: F64, thr: F64, e_tree: U64, e_mask: U64, starts: U64,
                  zflag: npt.NDArray[np.uint8], cat_info: U64, cb: np.uint64,
                  catbits: npt.NDArray[np.uint32], ct_info: U64, ct_trees: U64,
                  ct_tab: U64) -> None:
    """Lanes of ``v``: events ``i0..`` (16 at most) through the unchanged columns at once."""
    for k in range(v.shape[0]):
        v[k] = ALL
    for f in range(X.shape[1]):
        if not moved[f]:
            for r in range(BLOCK):  # extra lanes: copies of the last event
                xs[r] = X[i0 + min(r, events - 1), f]
            _block_feature(v, f, xs, xb, thr, e_tree, e_mask, starts, zflag, cat_info,
                           cb, catbits)
    for q in range(ct_info.shape[0]):
        fq = ct_info[q, 0]
        if not moved[fq]:
            for r in range(BLOCK):
                xs[r] = X[i0 + min(r, events - 1), fq]
            _block_table(v, q, xs, ct_info, ct_trees, ct_tab)


@nb.njit(cache=True, nogil=True)
def qs_sweep(X: F64, cols: npt.NDArray[np.int64], values: F64, out: F64, U: U64, F: F64,
             raw: bool, v: U64, vb: U64) -> None:
    """Score ``expand(X, cols, values)`` into ``out`` (rows · candidates × classes).

    ``values`` is events × candidates × len(cols); ``v`` and ``vb`` are scratch of
    BLOCK words per tree. Events go 16 at a time through the columns no candidate
    changes (the lanes of one SIMD block, as ``kernels.qs_predict`` scores 16 rows;
    fewer than the model's measured ``PAD_MIN`` events go one by one); then each
    event's candidates, 16 at a time, start from its lane and go through the candidate
    columns only.
    """
    (thr, e_tree, e_mask, starts, zflag, cat_info, cat_base, catbits, leafvals, leaf_off,
     tree_class, ct_info, ct_trees, ct_tab) = unpack(U, F)
    n, nf = X.shape
    c = values.shape[1]
    m = cols.shape[0]
    nt = leaf_off.shape[0] - 1
    cb = np.uint64(cat_base)
    ub = np.uint64(BLOCK)
    moved = np.zeros(nf, np.bool_)
    where = np.zeros(nf, np.int64)  # position of a moved feature in cols
    for a in range(m):
        moved[cols[a]] = True
        where[cols[a]] = a
    xb = np.empty(BLOCK)
    xs = np.empty(BLOCK)
    pad_min = int(F[PAD_MIN])  # fewest rows worth a block, measured per model
    for i0 in range(0, n, BLOCK):
        events = min(BLOCK, n - i0)
        if events < pad_min:
            for e in range(events):
                _event_scalar(v, e, X[i0 + e], moved, thr, e_tree, e_mask, starts, zflag,
                              cat_info, cb, catbits, ct_info, ct_trees, ct_tab)
        else:
            _events_block(v, X, i0, events, moved, xs, xb, thr, e_tree, e_mask, starts,
                          zflag, cat_info, cb, catbits, ct_info, ct_trees, ct_tab)
        for e in range(events):
            i = i0 + e
            for j0 in range(0, c, BLOCK):
                lanes = min(BLOCK, c - j0)
                for t in range(nt):
                    w = v[np.uint64(t) * ub + np.uint64(e)]
                    base = np.uint64(t) * ub
                    for r in range(BLOCK):
                        vb[base + np.uint64(r)] = w
                for a in range(m):
                    for r in range(BLOCK):  # extra lanes: copies of the last candidate
                        xs[r] = values[i, j0 + min(r, lanes - 1), a]
                    _block_feature(vb, cols[a], xs, xb, thr, e_tree, e_mask, starts, zflag,
                                   cat_info, cb, catbits)
                for q in range(ct_info.shape[0]):
                    fq = ct_info[q, 0]
                    if moved[fq]:
                        for r in range(BLOCK):
                            xs[r] = values[i, j0 + min(r, lanes - 1), where[fq]]
                        _block_table(vb, q, xs, ct_info, ct_trees, ct_tab)
                # Exit leaves, added per candidate in tree order (bit-identical sums).
                r0 = i * c + j0
                for r in range(lanes):
                    for k in range(out.shape[1]):
                        out[r0 + r, k] = 0.0
                block_leaves(out, r0, lanes, vb, leafvals, leaf_off, tree_class)
    finish_rows(out, 0, n * c, raw, F[0], int(F[2]), F[1])
