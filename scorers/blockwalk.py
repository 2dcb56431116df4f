"""Block-walking numba kernel for deep trees (> 64 leaves) and linear trees.

QuickScorer (``scorers.kernels``) clears, per row, the leaves behind every node the row
fails: its work grows with the number of nodes, the walk's with the depth. Past 64
leaves a tree also no longer fits one 64-bit leaf mask. This kernel walks instead,
arranged so that the walk is no longer one long chain of dependent loads:

- every tree is renumbered breadth-first with each node's two children side by side,
  one 16-byte record per node (threshold or categorical bitset position, and child,
  feature, flags in one word), so a step is ``node = kid + goes_right``: no branch;
  leaves step to themselves, and a parent's flags say whether each child is a leaf;
- many independent walks (lanes) advance together: the rows of a block (up to 512)
  through one tree (batches of 4 rows or more: each tree's records are read once per
  block, not once per row), or one row through a group of 32 trees (smaller batches);
- a step runs in phases over the lanes (load node words, thresholds, the rows' values,
  then the decision, which LLVM vectorises), so the loads of all lanes overlap;
- every 2 steps the lanes that reached a leaf drop out (the active ones are kept
  packed), so the work is close to the nodes visited, not every lane to the tree's full
  depth (2x more on a 255-leaf model).

Leaf values are added per row in tree order, so sums are bit-identical to LightGBM's.
LightGBM semantics are those of ``scorers.walker`` (which stays the reference walk, and
TreeSHAP's): pre-shifted thresholds for the 1e-35 zero rounding, NaN to its side per
node, zero-as-missing, categorical bitsets, linear leaves with the NaN fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np
import numpy.typing as npt

from features import jitcache
from scorers.ir import CATEGORICAL_MASK, DEFAULT_LEFT_MASK, MISSING_ZERO
from scorers.kernels import KZ, NAN_LEFT_BIT, finish_rows
from scorers.walker import GeneralTables

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = ["BlockTables", "block_predict", "build_block_tables"]

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

# Flags in bits 56-63 of a node's word.
COMPACT = 2  # steps between two compactions of the active lanes
CAT = 1  # categorical node: the record's first word is bitset offset << 24 | words
ZT = 2  # zero-as-missing node: |x| <= 1e-35 is "missing" as well as NaN
SPECIAL_LEFT = 4  # where missing goes (NaN; and zero on ZT nodes)
LEFT_IS_LEAF = 8  # the left child is a leaf (its lane is done); RIGHT_IS_LEAF = 16
RIGHT_IS_LEAF = 16
ROWS = 512  # rows per block in the row-major mode: the trees' records are read once per block
TREES = 32  # trees walked together for one row in the tree-major mode


@dataclass(frozen=True)
class BlockTables:
    """Node records of every tree, renumbered; see the module docstring."""

    word: U64  # child (bits 0-31), feature (32-55), flags (56-63)
    thr: F64  # threshold; on categorical nodes the bits hold bitset offset << 24 | words
    root: npt.NDArray[np.int64]  # (T) first record of each tree
    depth: npt.NDArray[np.int64]  # (T) depth of the deepest leaf (0: the root is a leaf)
    leaf: npt.NDArray[np.int64]  # (nodes) global leaf index (GeneralTables' numbering)
    has_cat: bool


def build_block_tables(g: GeneralTables) -> BlockTables:
    """Renumber every tree breadth-first, children in pairs (leaves get records too)."""
    nt = g.node_off.shape[0] - 1
    nodes_total = int(g.node_off[-1] + g.leaf_off[-1])
    thr = np.zeros(nodes_total, np.float64)
    word = np.zeros(nodes_total, np.uint64)
    leaf = np.zeros(nodes_total, np.int64)
    root = np.zeros(nt, np.int64)
    depth = np.zeros(nt, np.int64)
    zero_type = ((g.dtype >> 2) & 3) == MISSING_ZERO
    flags = np.where((g.dtype & CATEGORICAL_MASK) != 0, CAT,
                     np.where(zero_type, ZT | np.where(g.dtype & DEFAULT_LEFT_MASK,
                                                       SPECIAL_LEFT, 0),
                              np.where(g.dtype & NAN_LEFT_BIT, SPECIAL_LEFT, 0)))
    cat_bits = (g.cat_off << np.uint64(24)) | g.cat_nw
    _renumber(g.node_off, g.leaf_off, g.feat, g.thr, g.left, g.right, flags.astype(np.uint64),
              cat_bits, thr, thr.view(np.uint64), word, leaf, root, depth)
    return BlockTables(word=word, thr=thr, root=root, depth=depth, leaf=leaf,
                       has_cat=bool((g.dtype & CATEGORICAL_MASK).any()))


@nb.njit(cache=True, nogil=True)
def _renumber(node_off: U64, leaf_off: U64, feat: U64, gthr: F64,
              left: npt.NDArray[np.int64], right: npt.NDArray[np.int64], flags: U64,
              cat_bits: U64, thr: F64, thr_bits: U64, word: U64,
              leaf: npt.NDArray[np.int64], root: npt.NDArray[np.int64],
              depth: npt.NDArray[np.int64]) -> None:
    """Fill the records tree by tree, breadth-first (see ``build_block_tables``)."""
    at = 0
    leaf_word = np.uint64(SPECIAL_LEFT | LEFT_IS_LEAF) << np.uint64(56)
    for t in range(root.shape[0]):
        o = np.int64(node_off[t])
        lo = np.int64(leaf_off[t])
        size = np.int64(node_off[t + 1]) - o + np.int64(leaf_off[t + 1]) - lo
        # queue[k] = LightGBM child id (~leaf when negative) of record at + k
        queue = np.empty(size, np.int64)
        qdepth = np.zeros(size, np.int64)
        queue[0] = 0 if node_off[t + 1] > node_off[t] else -1
        root[t] = at
        nxt = 1
        for k in range(size):
            node = queue[k]
            rec = at + k
            if node < 0:  # leaf: steps to itself ("left", to a leaf) whatever the row
                thr[rec] = np.inf
                word[rec] = np.uint64(rec) | leaf_word
                leaf[rec] = lo + ~node
                depth[t] = max(depth[t], qdepth[k])
                continue
            gi = o + node
            fl = flags[gi]
            if fl & np.uint64(CAT):
                thr_bits[rec] = cat_bits[gi]
            else:
                thr[rec] = gthr[gi]
            fl |= np.uint64(LEFT_IS_LEAF if left[gi] < 0 else 0)
            fl |= np.uint64(RIGHT_IS_LEAF if right[gi] < 0 else 0)
            word[rec] = (np.uint64(at + nxt) | (feat[gi] << np.uint64(32))
                         | (fl << np.uint64(56)))
            queue[nxt] = left[gi]
            queue[nxt + 1] = right[gi]
            qdepth[nxt] = qdepth[k] + 1
            qdepth[nxt + 1] = qdepth[k] + 1
            nxt += 2
        at += size  # type: ignore[assignment]


@nb.njit(cache=True, nogil=True, inline="always")
def _cat_right(xo: float, tb: np.uint64, catbits: npt.NDArray[np.uint32]) -> np.int64:
    """1 when ``xo`` goes right at a categorical node whose bitset is ``tb`` (offset << 24
    | words): NaN, negative, out-of-range and unseen categories go right."""
    if not (xo > -1.0 and xo < 2147483648.0):
        return np.int64(1)
    c = np.uint64(np.int64(xo))
    cw = c >> np.uint64(5)
    if cw >= (tb & np.uint64(0xFFFFFF)):
        return np.int64(1)
    bits = catbits[np.int64(tb >> np.uint64(24)) + np.int64(cw)]
    return np.int64(1) - np.int64((bits >> np.uint32(c & np.uint64(31))) & np.uint32(1))


@nb.njit(cache=True, nogil=True)
def block_predict(X: F64, out: F64, word: U64, thr: F64, root: npt.NDArray[np.int64],
                  depth: npt.NDArray[np.int64], leaf: npt.NDArray[np.int64],
                  catbits: npt.NDArray[np.uint32], has_cat: bool, tree_class: U64,
                  is_linear: npt.NDArray[np.uint8], leafvals: F64, lin_const: F64,
                  lin_start: U64, lin_feat: U64, lin_coeff: F64, raw: bool, divide: float,
                  code: int, param: float) -> None:
    """Score every row of X (C-contiguous) into ``out`` (rows × classes, zero-filled).

    Each task is a set of lanes (row ``rows[i]`` in tree ``trees[i]``, ending at leaf
    record ``res[i]``): a block of rows through one tree, or (n < 4) one row through a
    group of trees. Every step runs in phases over the active lanes (load the node
    words, the thresholds, the rows' values; then the branch-free decision, which LLVM
    vectorises), and every ``COMPACT`` steps the lanes that reached a leaf drop out.
    """
    n, nf = X.shape
    xf = X.reshape(n * nf)
    nt = depth.shape[0]
    width = max(ROWS, TREES)
    node = np.empty(width, np.int64)  # record of each active lane
    who = np.empty(width, np.int64)  # its lane
    base = np.empty(width, np.int64)  # its row's offset in xf
    w = np.empty(width, np.uint64)
    prev = np.empty(width, np.int64)
    t = np.empty(width, np.float64)
    xo = np.empty(width, np.float64)
    res = np.empty(width, np.int64)  # record of each lane (its leaf at the end)
    rows = np.empty(width, np.int64)
    trees = np.empty(width, np.int64)
    tbits = thr.view(np.uint64)
    row_major = n >= 4
    tasks = ((n + ROWS - 1) // ROWS) * nt if row_major else n * ((nt + TREES - 1) // TREES)
    for task in range(tasks):
        if row_major:  # rows r0.. of a block through tree t0
            r0 = (task // nt) * ROWS
            t0 = task % nt
            nl = min(n, r0 + ROWS) - r0
            for i in range(nl):
                rows[i] = r0 + i
                trees[i] = t0
        else:  # row r0 through trees t0..
            per_row = (nt + TREES - 1) // TREES
            r0 = task // per_row
            t0 = (task % per_row) * TREES
            nl = min(nt, t0 + TREES) - t0
            for i in range(nl):
                rows[i] = r0
                trees[i] = t0 + i
        steps = 0
        for i in range(nl):
            node[i] = root[trees[i]]
            res[i] = node[i]
            who[i] = i
            base[i] = rows[i] * nf
            steps = max(steps, depth[trees[i]])
        active = nl
        done = 0
        while done < steps and active > 0:
            for _ in range(min(COMPACT, steps - done)):
                # Leaves step to themselves, so lanes already there are harmless.
                for i in range(active):
                    nd = node[i]
                    wi = word[nd]
                    w[i] = wi
                    prev[i] = nd
                    t[i] = thr[nd]
                    xo[i] = xf[base[i] + np.int64((wi >> np.uint64(32)) & np.uint64(0xFFFFFF))]
                for i in range(active):
                    wi = w[i]
                    x = xo[i]
                    special_left = np.int64((wi >> np.uint64(58)) & np.uint64(1))
                    zt = np.int64((wi >> np.uint64(57)) & np.uint64(1))
                    right = np.int64(not x <= t[i])
                    # Missing (NaN; |x| <= 1e-35 on zero-as-missing nodes) takes its side.
                    miss = np.int64(x != x) | (zt & np.int64(abs(x) <= KZ))
                    right = (right & ~miss) | (miss & (1 - special_left))
                    node[i] = np.int64(wi & np.uint64(0xFFFFFFFF)) + right
                if has_cat:  # categorical nodes redo their decision (a rare branch)
                    for i in range(active):
                        if (w[i] >> np.uint64(56)) & np.uint64(CAT):
                            node[i] = (np.int64(w[i] & np.uint64(0xFFFFFFFF))
                                       + _cat_right(xo[i], tbits[prev[i]], catbits))
            done += COMPACT
            # Keep, packed at the front, only the lanes not yet at a leaf.
            k = 0
            for i in range(active):
                nd = node[i]
                lane = who[i]
                res[lane] = nd
                right = nd - np.int64(w[i] & np.uint64(0xFFFFFFFF))
                node[k] = nd
                who[k] = lane
                base[k] = base[i]
                k += 1 - np.int64((w[i] >> np.uint64(59 + right)) & np.uint64(1))  # type: ignore[assignment]
            active = k
        # In lane order: a row's leaves are added in tree order (bit-identical sums).
        for i in range(nl):
            tr = trees[i]
            gl = leaf[res[i]]
            value = leafvals[gl]
            if is_linear[tr]:  # written out: a call per leaf costs ~100 ns (array refcounts)
                value = lin_const[gl]
                for j in range(lin_start[gl], lin_start[gl + 1]):
                    xv = X[rows[i], lin_feat[j]]
                    if np.isnan(xv):
                        value = leafvals[gl]  # LightGBM falls back to the constant leaf
                        break
                    value += lin_coeff[j] * (0.0 if abs(xv) <= KZ else xv)
            out[rows[i], tree_class[tr]] += value
    finish_rows(out, 0, n, raw, divide, code, param)
