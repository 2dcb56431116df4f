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
    finish_rows,
    qs_category_tables,
    qs_feature,
    trailing_zeros,
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
def qs_sweep(X: F64, cols: npt.NDArray[np.int64], values: F64, out: F64, U: U64, F: F64,
             raw: bool, v: U64, vc: U64) -> None:
    """Score ``expand(X, cols, values)`` into ``out`` (rows · candidates × classes).

    ``values`` is events × candidates × len(cols); ``v`` and ``vc`` are scratch of at
    least one word per tree.
    """
    (thr, e_tree, e_mask, starts, zflag, cat_info, cat_base, catbits, leafvals, leaf_off,
     tree_class, ct_info, ct_trees, ct_tab) = unpack(U, F)
    n, nf = X.shape
    c = values.shape[1]
    m = cols.shape[0]
    nt = leaf_off.shape[0] - 1
    cb = np.uint64(cat_base)
    moved = np.zeros(nf, np.bool_)
    for a in range(m):
        moved[cols[a]] = True
    x = np.empty(nf)
    for i in range(n):
        # Once per event: every column no candidate changes.
        for t in range(nt):
            v[t] = ALL
        for f in range(nf):
            x[f] = X[i, f]
            if not moved[f]:
                qs_feature(x[f], f, v, thr, e_tree, e_mask, starts, zflag, cat_info, cb,
                           catbits)
        for q in range(ct_info.shape[0]):
            if not moved[ct_info[q, 0]]:
                qs_category_tables(x, q, v, ct_info, ct_trees, ct_tab)
        # Per candidate: its own columns, then the exit leaves in tree order.
        for j in range(c):
            for t in range(nt):
                vc[t] = v[t]
            for a in range(m):
                x[cols[a]] = values[i, j, a]
            for a in range(m):
                f = cols[a]
                qs_feature(x[f], f, vc, thr, e_tree, e_mask, starts, zflag, cat_info, cb,
                           catbits)
            for q in range(ct_info.shape[0]):
                if moved[ct_info[q, 0]]:
                    qs_category_tables(x, q, vc, ct_info, ct_trees, ct_tab)
            r = i * c + j
            for k in range(out.shape[1]):
                out[r, k] = 0.0
            for t in range(nt):
                out[r, tree_class[t]] += leafvals[leaf_off[t] + np.uint64(trailing_zeros(vc[t]))]
    finish_rows(out, 0, n * c, raw, F[0], int(F[2]), F[1])
