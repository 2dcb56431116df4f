"""QuickScorer tables: per-feature sorted threshold lists and 64-bit leaf masks, in numpy.

Built once per model from the IR (and cached on disk packed by ``kernels.pack_qs``);
the numba kernels that read them live in ``scorers.kernels``. Entry regions: numeric
thresholds, the NaN case, the zero case (zero-as-missing nodes), categorical nodes, plus
per-category mask tables for categorical features (one AND per tree per row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scorers.ir import CATEGORICAL_MASK, DEFAULT_LEFT_MASK, MISSING_NONE, MISSING_ZERO, ModelIR

__all__ = ["ALL", "QSTables", "build_qs_tables", "qs_supported"]

CAT_TABLE_WORDS = 1 << 22  # per-category mask tables: at most 32 MB per model
ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
U64 = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class QSTables:
    """QuickScorer tables. Entry regions: numeric, NaN-case, zero-case, categorical."""

    thr: npt.NDArray[np.float64]  # threshold of numeric entries (region 0)
    e_tree: U64  # tree of every entry, all regions
    e_mask: U64  # bitvector AND-mask of every entry
    starts: U64  # (4, F+1): region r of feature f is starts[r, f]:starts[r, f+1]
    zflag: npt.NDArray[np.uint8]  # feature has a zero-as-missing node
    cat_info: U64  # (n_cat_entries, 2): bitset word offset, word count
    cat_base: int  # first entry index of region 3
    catbits: npt.NDArray[np.uint32]
    leafvals: npt.NDArray[np.float64]  # in-order leaf values, tree after tree
    leaf_off: U64
    tree_class: U64
    ct_info: U64  # (n, 5) per tabled categorical feature: feature, C, T, table off, trees off
    ct_trees: U64  # trees that split on each tabled feature
    ct_tab: U64  # (C + 1) × T masks per tabled feature; row C is "any other value"


def qs_supported(model: ModelIR) -> bool:
    """QuickScorer applies when every tree has <= 64 leaves and constant leaf values."""
    return all(t.num_leaves <= 64 and not t.is_linear for t in model.trees)


def _goes_right_when_zero(dt: int, thr: float) -> bool:
    """Side taken by the value 0.0 (also NaN on non-NaN missing types)."""
    if (dt >> 2) & 3 == MISSING_ZERO:
        return not dt & DEFAULT_LEFT_MASK
    return thr < 0.0


def build_qs_tables(model: ModelIR) -> QSTables:
    """Build QuickScorer tables (bitvector masks, sorted per-feature lists)."""
    nf = model.num_features
    num: list[tuple[int, float, int, int]] = []
    nan: list[tuple[int, int, int]] = []
    zero: list[tuple[int, int, int]] = []
    cat: list[tuple[int, int, int, int, int]] = []
    bits: list[npt.NDArray[np.uint32]] = []
    nbits = 0
    zflag = np.zeros(nf, np.uint8)
    leafvals: list[npt.NDArray[np.float64]] = []
    leaf_off = np.zeros(len(model.trees) + 1, np.uint64)
    for t, tree in enumerate(model.trees):
        order = tree.leaves_in_order()
        pos = np.empty(tree.num_leaves, np.int64)
        pos[order] = np.arange(tree.num_leaves)
        leafvals.append(tree.leaf_value[order])
        leaf_off[t + 1] = leaf_off[t] + tree.num_leaves
        if tree.num_leaves == 1:
            continue
        left, right = tree.left_child.tolist(), tree.right_child.tolist()
        preorder, stack = [], [0]
        while stack:
            node = stack.pop()
            preorder.append(node)
            stack.extend(c for c in (left[node], right[node]) if c >= 0)
        lo = [0] * tree.num_internal
        hi = [0] * tree.num_internal
        tree_bits_base = nbits
        if tree.cat_threshold.size:
            bits.append(tree.cat_threshold)
            nbits += tree.cat_threshold.size
        for node in reversed(preorder):  # children before parents
            lc, rc = left[node], right[node]
            llo, lhi = (int(pos[~lc]), int(pos[~lc]) + 1) if lc < 0 else (lo[lc], hi[lc])
            rhi = int(pos[~rc]) + 1 if rc < 0 else hi[rc]
            lo[node], hi[node] = llo, rhi
            mask = ((1 << 64) - 1) & ~(((1 << (lhi - llo)) - 1) << llo)
            f = int(tree.split_feature[node])
            dt = int(tree.decision_type[node])
            thr = float(tree.threshold[node])
            if dt & CATEGORICAL_MASK:
                ci = int(thr)
                b0, b1 = int(tree.cat_boundaries[ci]), int(tree.cat_boundaries[ci + 1])
                cat.append((f, t, mask, tree_bits_base + b0, b1 - b0))
                continue
            mt = (dt >> 2) & 3
            num.append((f, thr, t, mask))
            if mt == MISSING_ZERO:
                zflag[f] = 1
            nan_right = (not dt & DEFAULT_LEFT_MASK) if mt != MISSING_NONE else (thr < 0.0)
            if nan_right:
                nan.append((f, t, mask))
            if _goes_right_when_zero(dt, thr):
                zero.append((f, t, mask))
    num.sort(key=lambda e: (e[0], e[1]))
    nan = _merge_per_tree(nan)
    zero = _merge_per_tree(zero)
    all_bits = np.concatenate(bits) if bits else np.zeros(1, np.uint32)
    cat, ct_info, ct_trees, ct_tab = _category_tables(cat, all_bits)
    cat.sort(key=lambda e: e[0])
    starts = np.zeros((4, nf + 1), np.uint64)
    base = 0
    trees: list[int] = []
    masks: list[int] = []
    regions: list[list[tuple[int, int, int]]] = [
        [(f, t, m) for f, _, t, m in num], nan, zero, [(f, t, m) for f, t, m, _, _ in cat]]
    for region, entries in enumerate(regions):
        counts = np.bincount(np.array([e[0] for e in entries], np.int64), minlength=nf)
        starts[region, 0] = base
        starts[region, 1:] = base + np.cumsum(counts)
        base += len(entries)
        trees.extend(e[1] for e in entries)
        masks.extend(e[2] for e in entries)
    cat_base = len(num) + len(nan) + len(zero)
    return QSTables(
        thr=np.array([e[1] for e in num], np.float64),
        e_tree=np.array(trees, np.uint64),
        e_mask=np.array(masks, np.uint64),
        starts=starts,
        zflag=zflag,
        cat_info=np.array([(e[3], e[4]) for e in cat], np.uint64).reshape(-1, 2),
        cat_base=cat_base,
        catbits=all_bits,
        leafvals=np.concatenate(leafvals) if leafvals else np.zeros(0),
        leaf_off=leaf_off,
        tree_class=(np.arange(len(model.trees)) % model.num_tree_per_iteration).astype(np.uint64),
        ct_info=ct_info,
        ct_trees=ct_trees,
        ct_tab=ct_tab,
    )


def _merge_per_tree(entries: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """AND together the masks of entries with the same (feature, tree): one update each."""
    merged: dict[tuple[int, int], int] = {}
    for f, t, m in entries:
        merged[(f, t)] = merged.get((f, t), (1 << 64) - 1) & m
    return sorted((f, t, m) for (f, t), m in merged.items())


def _category_tables(cat: list[tuple[int, int, int, int, int]], bits: npt.NDArray[np.uint32]
                     ) -> tuple[list[tuple[int, int, int, int, int]], U64, U64, U64]:
    """Per categorical feature, precompute each category's combined mask per tree.

    A row then costs one AND per tree using the feature instead of one bitset test per
    node (the fraud-like model has ~15k categorical nodes). Features whose table would
    exceed the budget keep per-node bitset tests (returned as the remaining entries).
    """
    by_feature: dict[int, list[tuple[int, int, int, int, int]]] = {}
    for entry in cat:
        by_feature.setdefault(entry[0], []).append(entry)
    budget = CAT_TABLE_WORDS
    rest: list[tuple[int, int, int, int, int]] = []
    info: list[tuple[int, int, int, int, int]] = []
    trees_out: list[npt.NDArray[np.uint64]] = []
    tabs: list[npt.NDArray[np.uint64]] = []
    tab_off = trees_off = 0
    shifts = np.arange(32, dtype=np.uint32)
    for f in sorted(by_feature):
        nodes = by_feature[f]
        ncat = 32 * max(e[4] for e in nodes)
        trees = sorted({e[1] for e in nodes})
        size = (ncat + 1) * len(trees)
        if size > budget:
            rest.extend(nodes)
            continue
        budget -= size
        tpos = {t: i for i, t in enumerate(trees)}
        tab = np.full((ncat + 1, len(trees)), ALL, np.uint64)
        for _, t, mask, off, nw in nodes:
            words = bits[off:off + nw]
            inset = np.zeros(ncat, bool)
            inset[:32 * nw] = ((words[:, None] >> shifts) & 1).astype(bool).ravel()
            col = tab[:, tpos[t]]
            m = np.uint64(mask)
            col[:ncat][~inset] &= m
            col[ncat] &= m  # NaN, negative, huge or unseen: always right
        info.append((f, ncat, len(trees), tab_off, trees_off))
        trees_out.append(np.array(trees, np.uint64))
        tabs.append(tab.ravel())
        tab_off += size
        trees_off += len(trees)
    return (
        rest,
        np.array(info, np.uint64).reshape(-1, 5),
        np.concatenate(trees_out) if trees_out else np.zeros(0, np.uint64),
        np.concatenate(tabs) if tabs else np.zeros(0, np.uint64),
    )
