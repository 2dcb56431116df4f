"""Exact TreeSHAP feature contributions in numba, matching ``pred_contrib=True``.

The algorithm is Lundberg et al.'s polynomial TreeSHAP (arXiv:1706.06060) in the form
LightGBM implements it (``Tree::TreeSHAP``): same path bookkeeping, same hot-then-cold
visiting order and the same formulas, except that the path-weight divisions are
multiplications by reciprocals (1.2x faster than LightGBM's own ``pred_contrib`` instead
of 0.95x; results agree to ~1e-14). The
recursion is unrolled onto an explicit stack because numba compiles loops, not
recursive closures, well. Data counts (``leaf_count``/``internal_count``) weight the
paths; the bias column is each tree's count-weighted mean leaf value.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from features import jitcache
from scorers.ir import ModelIR
from scorers.walker import GeneralTables, go_left_or_right

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = ["expected_values", "shap_contributions"]

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]


def expected_values(model: ModelIR) -> F64:
    """Per-tree expected value (LightGBM's ``Tree::ExpectedValue``), same summation order."""
    out = np.zeros(len(model.trees))
    for t, tree in enumerate(model.trees):
        if tree.num_leaves == 1:
            out[t] = float(tree.leaf_value[0])
            continue
        total = float(tree.internal_count[0])
        acc = 0.0
        for i in range(tree.num_leaves):
            acc += (float(tree.leaf_count[i]) / total) * float(tree.leaf_value[i])
        out[t] = acc
    return out


@nb.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _extend(pf: npt.NDArray[np.int64], pz: F64, po: F64, pw: F64, b: int, d: int, z: float,
            o: float, fi: int, rc: F64) -> None:
    pf[b + d] = fi
    pz[b + d] = z
    po[b + d] = o
    pw[b + d] = 1.0 if d == 0 else 0.0
    inv = rc[d + 1]
    for i in range(d - 1, -1, -1):
        pw[b + i + 1] += o * pw[b + i] * (i + 1) * inv
        pw[b + i] = z * pw[b + i] * (d - i) * inv


@nb.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _unwind(pf: npt.NDArray[np.int64], pz: F64, po: F64, pw: F64, b: int, d: int,
            pi: int, rc: F64) -> None:
    o = po[b + pi]
    z = pz[b + pi]
    nop = pw[b + d]
    d1 = float(d + 1)
    if o != 0:
        inv_o = 1.0 / o
        for i in range(d - 1, -1, -1):
            tmp = pw[b + i]
            pw[b + i] = nop * d1 * rc[i + 1] * inv_o
            nop = tmp - pw[b + i] * z * (d - i) * rc[d + 1]
    else:
        inv_z = 1.0 / z
        for i in range(d - 1, -1, -1):
            pw[b + i] = pw[b + i] * d1 * rc[d - i] * inv_z
    for i in range(pi, d):
        pf[b + i] = pf[b + i + 1]
        pz[b + i] = pz[b + i + 1]
        po[b + i] = po[b + i + 1]


@nb.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _unwound_sum(pz: F64, po: F64, pw: F64, b: int, d: int, pi: int, rc: F64) -> float:
    # The O(depth²) inner loop of TreeSHAP: LightGBM's formulas with every division
    # turned into a multiplication by a reciprocal (1/o once, 1/k from a table). Same
    # results to ~1e-15 relative, 2-3x fewer cycles (a division is ~13 cycles latency).
    o = po[b + pi]
    z = pz[b + pi]
    nop = pw[b + d]
    total = 0.0
    d1 = float(d + 1)
    if o != 0:
        scale = d1 / o
        inv_d1 = rc[d + 1]
        for i in range(d - 1, -1, -1):
            tmp = nop * scale * rc[i + 1]
            total += tmp
            nop = pw[b + i] - tmp * z * ((d - i) * inv_d1)
    else:
        inv_z = d1 / z
        for i in range(d - 1, -1, -1):
            total += pw[b + i] * inv_z * rc[d - i]
    return total


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _contrib(X: F64, out: F64, node_off: U64, feat: U64, thr: F64,
             dtype: npt.NDArray[np.uint8], left: npt.NDArray[np.int64],
             right: npt.NDArray[np.int64], cat_off: U64, cat_nw: U64,
             catbits: npt.NDArray[np.uint32], leaf_off: U64, leafvals: F64, leaf_count: F64,
             node_count: F64, tree_class: U64, expected: F64, max_depth: int) -> None:
    n, nf = X.shape
    nt = leaf_off.shape[0] - 1
    size = (max_depth + 3) * (max_depth + 4) // 2 + 4
    pf = np.empty(size, np.int64)
    pz = np.empty(size)
    po = np.empty(size)
    pw = np.empty(size)
    depth_cap = 2 * (max_depth + 3)
    s_node = np.empty(depth_cap, np.int64)
    s_d = np.empty(depth_cap, np.int64)
    s_off = np.empty(depth_cap, np.int64)
    s_z = np.empty(depth_cap)
    s_o = np.empty(depth_cap)
    s_f = np.empty(depth_cap, np.int64)
    rc = np.empty(depth_cap + 2)  # rc[k] = 1/k, the path weights' only divisors
    rc[0] = 0.0
    for k in range(1, rc.shape[0]):
        rc[k] = 1.0 / k
    for r in range(n):
        x = X[r]
        for t in range(nt):
            col0 = np.int64(tree_class[t]) * (nf + 1)
            out[r, col0 + nf] += expected[t]
            noff = node_off[t]
            if node_off[t + 1] == noff:
                continue
            loff = leaf_off[t]
            sp = 0
            s_node[0] = 0
            s_d[0] = 0
            s_off[0] = 0
            s_z[0] = 1.0
            s_o[0] = 1.0
            s_f[0] = -1
            sp = 1
            while sp > 0:
                sp -= 1
                node = s_node[sp]
                d = s_d[sp]
                poff = s_off[sp]
                b = poff + d
                for i in range(d):
                    pf[b + i] = pf[poff + i]
                    pz[b + i] = pz[poff + i]
                    po[b + i] = po[poff + i]
                    pw[b + i] = pw[poff + i]
                _extend(pf, pz, po, pw, b, d, s_z[sp], s_o[sp], s_f[sp], rc)
                if node < 0:
                    lv = leafvals[loff + np.uint64(~node)]
                    for i in range(1, d + 1):
                        w = _unwound_sum(pz, po, pw, b, d, i, rc)
                        out[r, col0 + pf[b + i]] += w * (po[b + i] - pz[b + i]) * lv
                    continue
                g = noff + np.uint64(node)
                fg = np.int64(feat[g])
                hot = go_left_or_right(x[fg], g, thr, dtype, left, right, cat_off, cat_nw,
                                       catbits)
                cold = right[g] if hot == left[g] else left[g]
                w = node_count[g]
                hc = node_count[noff + np.uint64(hot)] if hot >= 0 else leaf_count[
                    loff + np.uint64(~hot)]
                cc = node_count[noff + np.uint64(cold)] if cold >= 0 else leaf_count[
                    loff + np.uint64(~cold)]
                iz = 1.0
                io = 1.0
                pi = 0
                while pi <= d:
                    if pf[b + pi] == fg:
                        break
                    pi += 1
                if pi != d + 1:
                    iz = pz[b + pi]
                    io = po[b + pi]
                    _unwind(pf, pz, po, pw, b, d, pi, rc)
                    d -= 1
                # cold is pushed first so the hot child is visited first, as in LightGBM.
                s_node[sp] = cold
                s_d[sp] = d + 1
                s_off[sp] = b
                s_z[sp] = (cc / w) * iz
                s_o[sp] = 0.0
                s_f[sp] = fg
                sp += 1
                s_node[sp] = hot
                s_d[sp] = d + 1
                s_off[sp] = b
                s_z[sp] = (hc / w) * iz
                s_o[sp] = io
                s_f[sp] = fg
                sp += 1


def shap_contributions(X: F64, tables: GeneralTables, expected: F64, num_features: int,
                       num_class: int) -> F64:
    """Contributions, rows × classes·(features + 1), the bias last in each class block."""
    out = np.zeros((X.shape[0], num_class * (num_features + 1)))
    g = tables
    _contrib(X, out, g.node_off, g.feat, g.thr, g.dtype, g.left, g.right, g.cat_off,
             g.cat_nw, g.catbits, g.leaf_off, g.leafvals, g.leaf_count, g.node_count,
             g.tree_class, expected, g.max_depth)
    return out
