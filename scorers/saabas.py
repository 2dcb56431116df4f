"""Path attribution (Saabas): cheap per-feature contributions along each decision path.

Each tree starts at its expected value (the same bias column TreeSHAP uses) and every
split on the row's path credits its feature with the change of the expected value from
the node to the child the row takes; the credits telescope to the leaf value, so a
row's contributions plus bias sum to its raw score, as SHAP values do. Unlike TreeSHAP
it ignores the features *not* on the path (no interaction averaging), which makes it
one tree walk per row instead of O(leaves · depth²) — good enough to rank reason codes,
not an exact Shapley value.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from features import jitcache
from scorers.ir import ModelIR
from scorers.walker import GeneralTables, go_left_or_right

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = ["node_means", "saabas_contributions"]

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]


def node_means(model: ModelIR, expected: F64) -> F64:
    """Count-weighted mean leaf value under every internal node (all trees concatenated).

    The root takes the tree's expected value exactly (LightGBM's ``ExpectedValue``), so
    the first credit of a path is measured from the same bias TreeSHAP reports. A node
    whose children carry no data counts (hand-written models) takes their plain mean.
    """
    parts: list[F64] = []
    for t, tree in enumerate(model.trees):
        ni = tree.num_internal
        if ni <= 0:
            continue
        mean = np.zeros(ni)
        count = np.zeros(ni)
        left, right = tree.left_child.tolist(), tree.right_child.tolist()
        order, stack = [], [0]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(c for c in (left[node], right[node]) if c >= 0)
        for node in reversed(order):  # children before parents
            vals, cnts = [], []
            for c in (left[node], right[node]):
                if c < 0:
                    vals.append(float(tree.leaf_value[~c]))
                    cnts.append(float(tree.leaf_count[~c]))
                else:
                    vals.append(mean[c])
                    cnts.append(count[c])
            total = cnts[0] + cnts[1]
            count[node] = total
            if total > 0:
                mean[node] = (cnts[0] * vals[0] + cnts[1] * vals[1]) / total
            else:
                mean[node] = 0.5 * (vals[0] + vals[1])
        mean[0] = expected[t]
        parts.append(mean)
    return np.concatenate(parts) if parts else np.zeros(0)


@nb.njit(cache=True, nogil=True)
def _saabas(X: F64, out: F64, node_off: U64, feat: U64, thr: F64,
            dtype: npt.NDArray[np.uint8], left: npt.NDArray[np.int64],
            right: npt.NDArray[np.int64], cat_off: U64, cat_nw: U64,
            catbits: npt.NDArray[np.uint32], leaf_off: U64, leafvals: F64, means: F64,
            tree_class: U64, expected: F64) -> None:
    n, nf = X.shape
    nt = leaf_off.shape[0] - 1
    for r in range(n):
        x = X[r]
        for t in range(nt):
            col0 = np.int64(tree_class[t]) * (nf + 1)
            out[r, col0 + nf] += expected[t]
            noff = node_off[t]
            if node_off[t + 1] == noff:
                continue  # a single-leaf tree: its value is all bias
            loff = leaf_off[t]
            node = 0
            prev = expected[t]
            while node >= 0:
                g = noff + np.uint64(node)
                fg = np.int64(feat[g])
                nxt = go_left_or_right(x[fg], g, thr, dtype, left, right, cat_off, cat_nw,
                                       catbits)
                val = (means[noff + np.uint64(nxt)] if nxt >= 0
                       else leafvals[loff + np.uint64(~nxt)])
                out[r, col0 + fg] += val - prev
                prev = val
                node = nxt


def saabas_contributions(X: F64, tables: GeneralTables, means: F64, expected: F64,
                         num_features: int, num_class: int) -> F64:
    """Path contributions, rows × classes·(features + 1), the bias last in each block."""
    out = np.zeros((X.shape[0], num_class * (num_features + 1)))
    g = tables
    _saabas(X, out, g.node_off, g.feat, g.thr, g.dtype, g.left, g.right, g.cat_off, g.cat_nw,
            g.catbits, g.leaf_off, g.leafvals, means, g.tree_class, expected)
    return out
