"""The reference numba walk: every tree node by node, one row at a time, LightGBM's way.

Any model (any leaf count, linear trees: leaf = constant + coefficients · features,
falling back to the constant when one of those features is NaN, as LightGBM does). It
is the cross-check of the scoring kernels (``CompiledModel.predict_general``), and its
tables and ``go_left_or_right`` are what TreeSHAP (``scorers.shap``) and the block
walk (``scorers.blockwalk``, the scoring path past QuickScorer's reach) are built on.
Cost: one dependent load chain per visited node, ~13-47 ns per node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt

from features import jitcache
from scorers.ir import (
    CATEGORICAL_MASK,
    DEFAULT_LEFT_MASK,
    MISSING_NAN,
    MISSING_ZERO,
    ModelIR,
)
from scorers.kernels import KZ, NAN_LEFT_BIT, U64, ZERO_TYPE_BIT, finish_rows

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = ["GeneralTables", "build_general_tables", "general_predict", "go_left_or_right"]


@dataclass(frozen=True)
class GeneralTables:
    """Node arrays of all trees concatenated (LightGBM's own node and leaf numbering)."""

    node_off: U64  # (T+1)
    feat: U64
    thr: npt.NDArray[np.float64]
    dtype: npt.NDArray[np.uint8]
    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    cat_off: U64
    cat_nw: U64
    catbits: npt.NDArray[np.uint32]
    leaf_off: U64  # (T+1)
    leafvals: npt.NDArray[np.float64]
    leaf_count: npt.NDArray[np.float64]
    node_count: npt.NDArray[np.float64]
    tree_class: U64
    is_linear: npt.NDArray[np.uint8]
    lin_const: npt.NDArray[np.float64]
    lin_start: U64  # (leaves+1)
    lin_feat: U64
    lin_coeff: npt.NDArray[np.float64]
    max_depth: int


def build_general_tables(model: ModelIR) -> GeneralTables:
    """Concatenate every tree's node arrays for the node-walking kernel and TreeSHAP."""
    trees = model.trees
    nt = len(trees)
    node_off = np.zeros(nt + 1, np.uint64)
    leaf_off = np.zeros(nt + 1, np.uint64)
    for t, tree in enumerate(trees):
        node_off[t + 1] = node_off[t] + tree.num_internal
        leaf_off[t + 1] = leaf_off[t] + tree.num_leaves
    cat_off = np.zeros(int(node_off[-1]), np.uint64)
    cat_nw = np.zeros(int(node_off[-1]), np.uint64)
    bits: list[npt.NDArray[np.uint32]] = []
    nbits = 0
    lin_start = [0]
    lin_feat: list[npt.NDArray[np.int32]] = []
    lin_coeff: list[npt.NDArray[np.float64]] = []
    lin_const: list[npt.NDArray[np.float64]] = []
    for t, tree in enumerate(trees):
        is_cat = (tree.decision_type & CATEGORICAL_MASK) != 0
        if is_cat.any():
            ci = tree.threshold[is_cat].astype(np.int64)
            b = tree.cat_boundaries.astype(np.int64)
            o = int(node_off[t])
            idx = np.nonzero(is_cat)[0] + o
            cat_off[idx] = (nbits + b[ci]).astype(np.uint64)
            cat_nw[idx] = (b[ci + 1] - b[ci]).astype(np.uint64)
        bits.append(tree.cat_threshold)
        nbits += tree.cat_threshold.size
        for leaf in range(tree.num_leaves):
            if tree.is_linear:
                lin_feat.append(tree.leaf_features[leaf])
                lin_coeff.append(tree.leaf_coeff[leaf])
                lin_start.append(lin_start[-1] + tree.leaf_features[leaf].size)
            else:
                lin_start.append(lin_start[-1])
        lin_const.append(tree.leaf_const if tree.is_linear else tree.leaf_value)

    def cat_arr(parts: Sequence[npt.NDArray[Any]], dtype: type) -> npt.NDArray[Any]:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    thr = cat_arr([t.threshold for t in trees], np.float64)
    dtype = cat_arr([t.decision_type for t in trees], np.uint8)
    numeric = (dtype & CATEGORICAL_MASK) == 0
    missing = (dtype >> 2) & 3
    # LightGBM rounds |x| <= 1e-35 to 0 before comparing; for non-NaN x the same answer
    # comes from comparing the raw x with these moved thresholds (zero-type nodes test
    # the zero range themselves and keep theirs).
    plain = numeric & (missing != MISSING_ZERO)
    shifted = thr.copy()
    neg = plain & (thr >= -KZ) & (thr < 0.0)
    pos = plain & (thr >= 0.0) & (thr <= KZ)
    shifted[neg] = np.nextafter(-KZ, -np.inf)
    shifted[pos] = KZ
    # NaN becomes 0.0 unless the missing type is NaN, where it takes the default side.
    nan_left = np.where(missing == MISSING_NAN, (dtype & DEFAULT_LEFT_MASK) != 0, thr >= 0.0)
    dtype = (dtype | np.where(plain & nan_left, NAN_LEFT_BIT, 0)).astype(np.uint8)
    return GeneralTables(
        node_off=node_off,
        feat=cat_arr([t.split_feature for t in trees], np.uint64),
        thr=shifted,
        dtype=dtype,
        left=cat_arr([t.left_child for t in trees], np.int64),
        right=cat_arr([t.right_child for t in trees], np.int64),
        cat_off=cat_off,
        cat_nw=cat_nw,
        catbits=np.concatenate([*bits, np.zeros(1, np.uint32)]),
        leaf_off=leaf_off,
        leafvals=cat_arr([t.leaf_value for t in trees], np.float64),
        leaf_count=cat_arr([t.leaf_count for t in trees], np.float64),
        node_count=cat_arr([t.internal_count for t in trees], np.float64),
        tree_class=(np.arange(nt) % model.num_tree_per_iteration).astype(np.uint64),
        is_linear=np.array([t.is_linear for t in trees], np.uint8),
        lin_const=cat_arr(lin_const, np.float64),
        lin_start=np.array(lin_start, np.uint64),
        lin_feat=cat_arr(lin_feat, np.uint64),
        lin_coeff=cat_arr(lin_coeff, np.float64),
        max_depth=max((t.max_depth() for t in trees), default=0),
    )


@nb.njit(cache=True, nogil=True, inline="always")
def go_left_or_right(xo: float, g: np.uint64, thr: npt.NDArray[np.float64],
                     dtype: npt.NDArray[np.uint8], left: npt.NDArray[np.int64],
                     right: npt.NDArray[np.int64], cat_off: U64, cat_nw: U64,
                     catbits: npt.NDArray[np.uint32]) -> int:
    """LightGBM's Tree::Decision for node g on prepared tables (see build_general_tables).

    Thresholds are pre-shifted for the 1e-35 zero rounding and bit 4 of ``dtype`` says
    where NaN goes. Both the numeric and the categorical outcome are computed without
    branches and one is selected: which one a node needs is as unpredictable as the
    outcome itself, and mispredicted branches cost more than the extra arithmetic.
    """
    dt = dtype[g]
    if dt & ZERO_TYPE_BIT:  # zero-as-missing (rare): zero range and NaN take the default
        if np.isnan(xo) or abs(xo) <= KZ:
            return left[g] if dt & DEFAULT_LEFT_MASK else right[g]
        return left[g] if xo <= thr[g] else right[g]
    num_left = (xo <= thr[g]) | (np.isnan(xo) & ((dt & NAN_LEFT_BIT) != 0))
    # Categorical: NaN, negative and out-of-int-range values go right (see cat_goes_left).
    valid = (xo > -1.0) & (xo < 2147483648.0)
    c = np.uint64(np.int64(xo)) if valid else np.uint64(0)
    w = c >> np.uint64(5)
    in_range = valid & (w < cat_nw[g])
    word = catbits[cat_off[g] + (w if in_range else np.uint64(0))]
    cat_left = in_range & (((word >> np.uint32(c & np.uint64(31))) & np.uint32(1)) != 0)
    is_cat = (dt & CATEGORICAL_MASK) != 0
    goes_left = (is_cat & cat_left) | ((not is_cat) & num_left)
    return left[g] if goes_left else right[g]


@nb.njit(cache=True, nogil=True)
def general_predict(X: npt.NDArray[np.float64], out: npt.NDArray[np.float64], node_off: U64,
                    feat: U64, thr: npt.NDArray[np.float64], dtype: npt.NDArray[np.uint8],
                    left: npt.NDArray[np.int64], right: npt.NDArray[np.int64], cat_off: U64,
                    cat_nw: U64, catbits: npt.NDArray[np.uint32], leaf_off: U64,
                    leafvals: npt.NDArray[np.float64], tree_class: U64,
                    is_linear: npt.NDArray[np.uint8], lin_const: npt.NDArray[np.float64],
                    lin_start: U64, lin_feat: U64, lin_coeff: npt.NDArray[np.float64],
                    raw: bool, divide: float, code: int, param: float) -> None:
    """Score rows by walking every tree node by node (any leaf count, linear leaves)."""
    n = X.shape[0]
    nt = leaf_off.shape[0] - 1
    for r in range(n):
        x = X[r]
        for t in range(nt):
            # The walk is written out here rather than calling go_left_or_right: numba's
            # inlining of that helper made this loop 4x slower. Same logic; both paths are
            # oracle-tested against LightGBM.
            o = node_off[t]
            node = 0 if node_off[t + 1] > o else -1
            while node >= 0:
                g = o + np.uint64(node)
                xo = x[feat[g]]
                dt = dtype[g]
                if dt & ZERO_TYPE_BIT:
                    if np.isnan(xo) or abs(xo) <= KZ:
                        node = left[g] if dt & DEFAULT_LEFT_MASK else right[g]
                    else:
                        node = left[g] if xo <= thr[g] else right[g]
                    continue
                num_left = (xo <= thr[g]) | (np.isnan(xo) & ((dt & NAN_LEFT_BIT) != 0))
                valid = (xo > -1.0) & (xo < 2147483648.0)
                c = np.uint64(np.int64(xo)) if valid else np.uint64(0)
                w = c >> np.uint64(5)
                in_range = valid & (w < cat_nw[g])
                word = catbits[cat_off[g] + (w if in_range else np.uint64(0))]
                cat_left = in_range & (((word >> np.uint32(c & np.uint64(31)))
                                        & np.uint32(1)) != 0)
                is_cat = (dt & CATEGORICAL_MASK) != 0
                goes_left = (is_cat & cat_left) | ((not is_cat) & num_left)
                node = left[g] if goes_left else right[g]
            leaf = leaf_off[t] + np.uint64(~node)
            if is_linear[t]:
                value = lin_const[leaf]
                for i in range(lin_start[leaf], lin_start[leaf + np.uint64(1)]):
                    xv = x[lin_feat[i]]
                    if np.isnan(xv):
                        value = leafvals[leaf]  # LightGBM falls back to the constant leaf
                        break
                    value += lin_coeff[i] * (0.0 if abs(xv) <= KZ else xv)
            else:
                value = leafvals[leaf]
            out[r, tree_class[t]] += value
    finish_rows(out, 0, n, raw, divide, code, param)
