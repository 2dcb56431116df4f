"""Numba QuickScorer kernels that score a parsed model, plus helpers shared with the walker.

``build_qs_tables`` + ``qs_predict`` implement QuickScorer (Lucchese et al., SIGIR 2015)
for models whose trees have at most 64 leaves and constant leaves: one 64-bit leaf
bitvector per tree, per-feature threshold lists sorted ascending, every node a row
fails (x > threshold) clears the leaves of its left subtree, the exit leaf is the
lowest set bit. Leaf values are summed per row in tree order, so results are
bit-identical to LightGBM's own loop. Rows are scored 16 at a time (one threshold scan
shared by the block, branch-free updates LLVM vectorises) with a scalar early-exit
path for the remainder and for batch 1.

Everything else (deeper or linear trees) is scored by ``scorers.blockwalk``; the
reference node walk (``scorers.walker``) shares the helpers at the end of this module.

LightGBM semantics mirrored here: a value with |x| <= 1e-35 (kZeroThreshold) is 0.0;
NaN is 0.0 unless the node's missing type is NaN; zero/NaN missing types send the value
to the default side; categorical values are truncated to int, and NaN, negative or
out-of-range values go right.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt
from llvmlite import ir as llvm_ir
from numba.core import types as nb_types
from numba.cpython.unsafe.numbers import trailing_zeros as _trailing_zeros
from numba.extending import intrinsic

from features import jitcache
from scorers.ir import ZERO_THRESHOLD
from scorers.objectives import apply_transform
from scorers.qstables import ALL, QSTables, build_qs_tables, qs_supported

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = [
    "ALL",
    "BLOCK",
    "F_HEAD",
    "KZ",
    "NAN_LEFT_BIT",
    "PAD_MIN",
    "ZERO_TYPE_BIT",
    "QSTables",
    "block_leaves",
    "build_qs_tables",
    "cat_goes_left",
    "cat_row",
    "finish_rows",
    "masked_and_block",
    "pack_qs",
    "qs_predict",
    "qs_predict_packed",
    "qs_predict_parallel",
    "qs_supported",
    "unpack",
]

BLOCK = 16  # rows sharing one threshold scan
ZERO_TYPE_BIT = 4  # decision_type bits 2-3 == 1: zero-as-missing
NAN_LEFT_BIT = 16  # set by build_general_tables: NaN goes left at this numeric node
KZ = ZERO_THRESHOLD
U64 = npt.NDArray[np.uint64]
# count-trailing-zeros as one instruction (tzcnt/bsf): the QuickScorer exit leaf.
trailing_zeros: Any = _trailing_zeros


# ---------------------------------------------------------------- shared helpers


@nb.njit(cache=True, nogil=True, inline="always")
def cat_goes_left(x: float, catbits: npt.NDArray[np.uint32], off: np.uint64,
                  nw: np.uint64) -> bool:
    """LightGBM's CategoricalDecision: int(x) in the bitset → left; NaN/negative → right."""
    # static_cast<int> of a value outside int range is INT_MIN on x86: negative → right.
    if not (x > -1.0 and x < 2147483648.0):
        return False
    c = np.uint64(np.int64(x))
    w = c >> np.uint64(5)
    if w >= nw:
        return False
    return ((catbits[off + w] >> np.uint32(c & np.uint64(31))) & np.uint32(1)) != 0


@nb.njit(cache=True, nogil=True)
def finish_rows(out: npt.NDArray[np.float64], r0: int, r1: int, raw: bool, divide: float,
                code: int, param: float) -> None:
    """Average (rf) and apply the objective's transform to rows r0..r1 of ``out``."""
    if raw:
        return
    for r in range(r0, r1):
        row = out[r]
        if divide != 1.0:
            for k in range(row.shape[0]):
                row[k] /= divide
        apply_transform(row, code, param)


# ---------------------------------------------------------------- QuickScorer


def _splat(builder: Any, value: Any, vec_type: Any) -> Any:
    i32 = llvm_ir.IntType(32)
    undef = llvm_ir.Constant(vec_type, llvm_ir.Undefined)
    one = builder.insert_element(undef, value, llvm_ir.Constant(i32, 0))
    zeros = llvm_ir.Constant(llvm_ir.VectorType(i32, BLOCK), [0] * BLOCK)
    return builder.shuffle_vector(one, undef, zeros)


@intrinsic
def _masked_and_block(typingctx: Any, v: Any, base: Any, xb: Any, t: Any, m: Any) -> Any:
    """``v[base + r] &= m if xb[r] > t else ~0`` for r < BLOCK, as one vector operation.

    LLVM did not vectorise the equivalent loop (the block scan stayed scalar); written as
    explicit <16 x double> compare + <16 x i64> select/and it runs on SIMD registers.
    """
    sig = nb_types.void(v, base, xb, t, m)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        v_arr, base_v, xb_arr, t_v, m_v = args
        va = context.make_array(signature.args[0])(context, builder, v_arr)
        xa = context.make_array(signature.args[2])(context, builder, xb_arr)
        vec_i = llvm_ir.VectorType(llvm_ir.IntType(64), BLOCK)
        vec_f = llvm_ir.VectorType(llvm_ir.DoubleType(), BLOCK)
        vp = builder.bitcast(builder.gep(va.data, [base_v]), vec_i.as_pointer())
        xp = builder.bitcast(xa.data, vec_f.as_pointer())
        xv = builder.load(xp, align=8)
        vv = builder.load(vp, align=8)
        fails = builder.fcmp_ordered(">", xv, _splat(builder, t_v, vec_f))
        sel = builder.select(fails, _splat(builder, m_v, vec_i),
                             llvm_ir.Constant(vec_i, [-1] * BLOCK))
        builder.store(builder.and_(vv, sel), vp, align=8)
        return context.get_dummy_value()

    return sig, codegen


# Called from jitted code with 5 arguments (numba supplies typingctx); typed loosely here.
masked_and_block: Any = _masked_and_block



@nb.njit(cache=True, nogil=True, inline="always")
def _apply(v: U64, e_tree: U64, e_mask: U64, s: np.uint64, e: np.uint64) -> None:
    for i in range(s, e):
        v[e_tree[i]] &= e_mask[i]


@nb.njit(cache=True, nogil=True, inline="always")
def _qs_row(x: npt.NDArray[np.float64], v: U64, thr: npt.NDArray[np.float64], e_tree: U64,
            e_mask: U64, starts: U64, zflag: npt.NDArray[np.uint8], cat_info: U64,
            cat_base: np.uint64, catbits: npt.NDArray[np.uint32], ct_info: U64, ct_trees: U64,
            ct_tab: U64) -> None:
    """Clear, in ``v``, the leaves one row cannot reach (scalar, early-exit scans)."""
    for t in range(v.shape[0]):
        v[t] = ALL
    nf = x.shape[0]
    for f in range(nf):
        xo = x[f]
        if np.isnan(xo):
            _apply(v, e_tree, e_mask, starts[1, f], starts[1, f + 1])
        elif abs(xo) <= KZ and zflag[f]:
            _apply(v, e_tree, e_mask, starts[2, f], starts[2, f + 1])
        else:
            xv = 0.0 if abs(xo) <= KZ else xo
            i = starts[0, f]
            end = starts[0, f + 1]
            while i < end and thr[i] < xv:
                v[e_tree[i]] &= e_mask[i]
                i += np.uint64(1)
        cs = starts[3, f]
        ce = starts[3, f + 1]
        for i in range(cs, ce):
            j = i - cat_base
            if not cat_goes_left(xo, catbits, cat_info[j, 0], cat_info[j, 1]):
                v[e_tree[i]] &= e_mask[i]
    for q in range(ct_info.shape[0]):
        row = cat_row(x[ct_info[q, 0]], ct_info[q, 1], ct_info[q, 2], ct_info[q, 3])
        toff = ct_info[q, 4]
        for k in range(ct_info[q, 2]):
            v[ct_trees[toff + k]] &= ct_tab[row + k]


@nb.njit(cache=True, nogil=True, inline="always")
def cat_row(xo: float, ncat: np.uint64, ntrees: np.uint64, off: np.uint64) -> np.uint64:
    """Start of the table row for value xo (row ncat holds NaN/negative/unseen)."""
    c = ncat
    if xo > -1.0 and xo < 2147483648.0:
        c = min(np.uint64(np.int64(xo)), ncat)
    return off + c * ntrees


@nb.njit(cache=True, nogil=True)
def _qs_block(X: npt.NDArray[np.float64], r0: int, v: U64, thr: npt.NDArray[np.float64],
              e_tree: U64, e_mask: U64, starts: U64, zflag: npt.NDArray[np.uint8],
              cat_info: U64, cat_base: np.uint64, catbits: npt.NDArray[np.uint32],
              ct_info: U64, ct_trees: U64, ct_tab: U64, xb: npt.NDArray[np.float64]) -> None:
    """Clear unreachable leaves for BLOCK rows at once; v is laid out [tree, row]."""
    ub = np.uint64(BLOCK)
    for t in range(v.shape[0]):
        v[t] = ALL
    nf = X.shape[1]
    for f in range(nf):
        xmax = -np.inf
        for r in range(BLOCK):
            xo = X[r0 + r, f]
            ur = np.uint64(r)
            if np.isnan(xo):
                for i in range(starts[1, f], starts[1, f + 1]):
                    v[e_tree[i] * ub + ur] &= e_mask[i]
                xb[r] = np.nan
            elif abs(xo) <= KZ:
                if zflag[f]:
                    for i in range(starts[2, f], starts[2, f + 1]):
                        v[e_tree[i] * ub + ur] &= e_mask[i]
                    xb[r] = np.nan
                else:
                    xb[r] = 0.0
                    xmax = max(xmax, 0.0)
            else:
                xb[r] = xo
                xmax = max(xmax, xo)
        for i in range(starts[0, f], starts[0, f + 1]):
            t = thr[i]
            if t >= xmax:
                break
            # All 16 rows at once: a row failing the node (x > t) ANDs the mask, the
            # others (and NaN lanes) AND all-ones.
            masked_and_block(v, e_tree[i] * ub, xb, t, e_mask[i])
        cs = starts[3, f]
        ce = starts[3, f + 1]
        if cs < ce:
            for r in range(BLOCK):
                xo = X[r0 + r, f]
                ur = np.uint64(r)
                for i in range(cs, ce):
                    j = i - cat_base
                    if not cat_goes_left(xo, catbits, cat_info[j, 0], cat_info[j, 1]):
                        v[e_tree[i] * ub + ur] &= e_mask[i]
    for q in range(ct_info.shape[0]):
        fq = ct_info[q, 0]
        toff = ct_info[q, 4]
        nct = ct_info[q, 2]
        for r in range(BLOCK):
            row = cat_row(X[r0 + r, fq], ct_info[q, 1], nct, ct_info[q, 3])
            ur = np.uint64(r)
            for k in range(nct):
                v[ct_trees[toff + k] * ub + ur] &= ct_tab[row + k]


@nb.njit(cache=True, nogil=True, inline="always")
def block_leaves(out: npt.NDArray[np.float64], r0: int, rows: int, v: U64,
                  leafvals: npt.NDArray[np.float64], leaf_off: U64, tree_class: U64) -> None:
    """Add the exit leaves of the first ``rows`` lanes of a block to out[r0:r0 + rows]."""
    ub = np.uint64(BLOCK)
    for t in range(leaf_off.shape[0] - 1):
        k = tree_class[t]
        lo = leaf_off[t]
        base = np.uint64(t) * ub
        for r in range(rows):
            leaf = np.uint64(trailing_zeros(v[base + np.uint64(r)]))
            out[r0 + r, k] += leafvals[lo + leaf]


@nb.njit(cache=True, nogil=True)
def qs_predict(X: npt.NDArray[np.float64], out: npt.NDArray[np.float64],
               thr: npt.NDArray[np.float64], e_tree: U64, e_mask: U64, starts: U64,
               zflag: npt.NDArray[np.uint8], cat_info: U64, cat_base: int,
               catbits: npt.NDArray[np.uint32], leafvals: npt.NDArray[np.float64],
               leaf_off: U64, tree_class: U64, ct_info: U64, ct_trees: U64, ct_tab: U64,
               raw: bool, divide: float, code: int, param: float, pad_min: int, v: U64,
               xb: npt.NDArray[np.float64]) -> None:
    """Score every row of X into ``out`` (rows × classes), which it zero-fills first.

    Full blocks of 16 rows take the SIMD path. The last ``n % 16`` rows take the scalar
    early-exit path, unless there are at least ``pad_min`` of them: then they are copied
    into one block padded with copies of the last row, whose extra lanes are discarded
    (a block costs a few scalar rows; ``CompiledModel`` measures how many per model).
    ``v`` is scratch of at least trees × BLOCK words and ``xb`` of BLOCK floats, passed in
    so that a caller scoring many micro-batches allocates them once.
    """
    n = X.shape[0]
    nt = leaf_off.shape[0] - 1
    cb = np.uint64(cat_base)
    for r in range(n):
        for k in range(out.shape[1]):
            out[r, k] = 0.0
    nblocks = n // BLOCK
    rem = n - nblocks * BLOCK
    padded = rem > 0 and rem >= pad_min
    pad = X
    if padded:
        pad = np.empty((BLOCK, X.shape[1]))
        for r in range(BLOCK):
            src = X[nblocks * BLOCK + min(r, rem - 1)]
            for f in range(X.shape[1]):
                pad[r, f] = src[f]
    # One call site for full and padded blocks: a second one would be a second
    # specialisation of _qs_block to compile (its row offset 0 is typed as a literal).
    for b in range(nblocks + (1 if padded else 0)):
        last = b == nblocks
        _qs_block(pad if last else X, 0 if last else b * BLOCK, v, thr, e_tree, e_mask,
                  starts, zflag, cat_info, cb, catbits, ct_info, ct_trees, ct_tab, xb)
        block_leaves(out, b * BLOCK, rem if last else BLOCK, v, leafvals, leaf_off,
                      tree_class)
    r0 = n if padded else nblocks * BLOCK
    vt = v[:nt]
    for r in range(r0, n):
        _qs_row(X[r], vt, thr, e_tree, e_mask, starts, zflag, cat_info, cb, catbits, ct_info,
                ct_trees, ct_tab)
        if out.shape[1] == 1:
            # One output: sum in a register (same order from 0.0, so bit-identical); a
            # read-modify-write of out[r, 0] per tree is a store-to-load chain.
            acc = 0.0
            for t in range(nt):
                acc += leafvals[leaf_off[t] + np.uint64(trailing_zeros(vt[t]))]
            out[r, 0] = acc
        else:
            for t in range(nt):
                leaf = np.uint64(trailing_zeros(vt[t]))
                out[r, tree_class[t]] += leafvals[leaf_off[t] + leaf]
    finish_rows(out, 0, n, raw, divide, code, param)


_U_PARTS = 11  # uint64 sections in a packed table buffer, see pack_qs
F_HEAD = 4  # divide, param, code, pad_min; then thresholds and leaf values
PAD_MIN = 3  # index of pad_min in F


def pack_qs(q: QSTables, num_features: int, divide: float, code: int, param: float
            ) -> tuple[U64, npt.NDArray[np.float64]]:
    """All QuickScorer tables, and the model's output constants, in two buffers.

    Numba unboxes every argument on each call (~60 ns per array); two buffers instead of
    twenty-odd arguments keep a batch-1 call cheap. ``unpack`` turns them back into views.
    ``divide`` (rf averaging), ``param`` and ``code`` (objective transform) and
    ``pad_min`` (see ``qs_predict``; ``BLOCK``: never pad) lead ``F``.
    """
    parts = [q.e_tree, q.e_mask, q.starts.ravel(), q.zflag.astype(np.uint64),
             q.cat_info.ravel(), q.catbits.astype(np.uint64), q.leaf_off, q.tree_class,
             q.ct_info.ravel(), q.ct_trees, q.ct_tab]
    assert len(parts) == _U_PARTS
    head = 3 + _U_PARTS + 1
    offsets = np.cumsum([head] + [p.size for p in parts])
    header = np.array([num_features, q.cat_base, q.thr.size, *offsets], np.uint64)
    return (np.concatenate([header, *(p.astype(np.uint64) for p in parts)]),
            np.concatenate([[divide, param, float(code), float(BLOCK)], q.thr, q.leafvals]))


@nb.njit(cache=True, nogil=True, inline="always")
def unpack(U: U64, F: npt.NDArray[np.float64]) -> Any:
    nf = np.int64(U[0])
    o = U[3:3 + _U_PARTS + 1]
    nthr = U[2]
    ncat = np.int64(o[5] - o[4]) // 2
    nct = np.int64(o[9] - o[8]) // 5
    h = F_HEAD
    return (F[h:h + nthr], U[o[0]:o[1]], U[o[1]:o[2]], U[o[2]:o[3]].reshape((4, nf + 1)),
            U[o[3]:o[4]], U[o[4]:o[5]].reshape((ncat, 2)), U[1], U[o[5]:o[6]], F[h + nthr:],
            U[o[6]:o[7]], U[o[7]:o[8]], U[o[8]:o[9]].reshape((nct, 5)), U[o[9]:o[10]],
            U[o[10]:o[11]])


@nb.njit(cache=True, nogil=True)
def qs_predict_packed(X: npt.NDArray[np.float64], out: npt.NDArray[np.float64], U: U64,
                      F: npt.NDArray[np.float64], raw: bool, v: U64,
                      xb: npt.NDArray[np.float64]) -> None:
    """``qs_predict`` on tables packed by ``pack_qs`` (the per-call hot path).

    ``out`` is flat (rows · classes): the caller returns it as is for one output,
    without a Python-side reshape or slice (each ~0.13 µs at batch 1).
    """
    (thr, e_tree, e_mask, starts, zflag, cat_info, cat_base, catbits, leafvals, leaf_off,
     tree_class, ct_info, ct_trees, ct_tab) = unpack(U, F)
    n = X.shape[0]
    out2 = out.reshape((n, out.shape[0] // n if n else 1))
    qs_predict(X, out2, thr, e_tree, e_mask, starts, zflag, cat_info, cat_base, catbits,
               leafvals, leaf_off, tree_class, ct_info, ct_trees, ct_tab, raw, F[0], int(F[2]),
               F[1], int(F[PAD_MIN]), v, xb)


@nb.njit(cache=True, nogil=True, parallel=True)
def qs_predict_parallel(X: npt.NDArray[np.float64], out: npt.NDArray[np.float64], U: U64,
                        F: npt.NDArray[np.float64], raw: bool) -> None:
    """``qs_predict_packed`` with chunks of rows spread over threads (prange); same results."""
    n = X.shape[0]
    nk = out.shape[0] // n if n else 1
    nt = U[3 + 7] - U[3 + 6] - 1  # leaf_off has trees + 1 entries
    chunk = BLOCK * 8
    nchunks = (n + chunk - 1) // chunk
    for c in nb.prange(nchunks):
        r0 = c * chunk
        r1 = min(n, r0 + chunk)
        v = np.empty(max(nt, 1) * BLOCK, np.uint64)
        xb = np.empty(BLOCK, np.float64)
        qs_predict_packed(X[r0:r1], out[r0 * nk:r1 * nk], U, F, raw, v, xb)
