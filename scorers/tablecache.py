"""The on-disk cache of a compiled model's tables: written atomically, trusted only once verified.

The cache (``$STREAMSCORE_HOME/cache/scorer``) may sit on a volume every pod shares, so
a file may be truncated by a crash, flipped by a disk, copied from another model or
edited by hand. A file is used only when:

1. its digest matches: SHA-256 over the model's sha256, the kernel tag (the format
   version plus ``features.jitcache.digest()``, which covers the source of every
   kernel module and of what they import, TreeSHAP's tables included, and the numba
   and llvmlite versions) and every array's name, dtype, shape and bytes. With
   ``$STREAMSCORE_CACHE_KEY`` set the digest is an HMAC under that key, so that a
   writer without the key cannot forge a file either;
2. its tables pass range checks (offsets, tree, feature and leaf indices, bitset
   positions), so that even a file with a valid digest cannot make a kernel read
   outside its arrays.

Anything else is rejected with one warning line, counted in :func:`rejections` (by
reason, for a metrics exporter), and the caller rebuilds from the model text and
overwrites the file atomically.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CacheRejected", "kernel_tag", "load", "rejections", "save"]

_log = logging.getLogger(__name__)
_FORMAT = b"4"  # bump when the cached file's contents change (4: digest + range checks)
_DIGEST = "digest"
_rejected: Counter[str] = Counter()
_lock = threading.Lock()
U64 = npt.NDArray[np.uint64]


class CacheRejected(ValueError):
    """A cached file failed verification; the message says why (one line)."""


@functools.cache
def kernel_tag() -> str:
    """Short key of everything that shapes the cached tables (format, kernels, numba)."""
    from features import jitcache

    return hashlib.sha256(_FORMAT + jitcache.digest().encode()).hexdigest()[:12]


def rejections() -> dict[str, int]:
    """Cache files rejected in this process so far, by reason (digest, ranges, ...)."""
    with _lock:
        return dict(_rejected)


def _digest(model_sha: str, arrays: dict[str, npt.NDArray[Any]]) -> bytes:
    key = os.environ.get("STREAMSCORE_CACHE_KEY", "").encode()
    h = hmac.new(key, digestmod=hashlib.sha256) if key else hashlib.sha256()
    h.update(f"{model_sha} {kernel_tag()}\n".encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name} {a.dtype.str} {a.shape}\n".encode())
        h.update(a.tobytes())
    return h.digest()


def save(path: Path, model_sha: str, arrays: dict[str, npt.NDArray[Any]]) -> None:
    """Write ``arrays`` plus their digest to ``path`` atomically (a read-only cache is fine)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                savez: Any = np.savez  # numpy's stub types **kwds as its allow_pickle flag
                digest = np.frombuffer(_digest(model_sha, arrays), np.uint8)
                savez(fh, **arrays, **{_DIGEST: digest})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only or full cache only costs the rebuild next time


def load(path: Path, model_sha: str) -> dict[str, Any] | None:
    """The verified arrays of ``path`` (plus ``header_facts``), or None to rebuild.

    None without a word when the file does not exist; None with a warning and a counted
    rejection when it exists but fails any check.
    """
    try:
        with np.load(path, allow_pickle=False) as cached:
            arrays = {name: cached[name] for name in cached.files}
    except FileNotFoundError:
        return None
    except Exception as exc:  # any unreadable file is rebuilt, never raised
        return _reject(path, "unreadable", f"{type(exc).__name__}: {exc}")
    stored = arrays.pop(_DIGEST, None)
    if stored is None or not hmac.compare_digest(stored.tobytes(),
                                                 _digest(model_sha, arrays)):
        return _reject(path, "digest", "digest mismatch (corrupt, foreign or stale file)")
    try:
        arrays["header_facts"] = check(arrays)
    except CacheRejected as exc:
        return _reject(path, "ranges", str(exc))
    return arrays


def _reject(path: Path, reason: str, detail: str) -> dict[str, Any] | None:
    with _lock:
        _rejected[reason] += 1
    _log.warning("scorer table cache %s rejected (%s), rebuilding from the model: %s",
                 path, reason, detail[:200])
    return None


# ------------------------------------------------------------------ range checks


def _require(ok: Any, what: str) -> None:
    if not bool(ok):
        raise CacheRejected(what)


def _monotone(a: npt.NDArray[Any], first: int, last: int, what: str) -> None:
    _require(a.ndim == 1 and a.size >= 1 and int(a[0]) == first and int(a[-1]) == last
             and bool(np.all(a[1:] >= a[:-1])), f"{what} is not a monotone index")


def check(arrays: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
    """Header facts of a cached file after checking every index its tables hold."""
    try:
        header = json.loads(arrays["header"].tobytes())
        nf = len(header["feature_names"])
        nk = int(header["num_tree_per_iteration"])
        U, F = arrays["U"], arrays["F"]
    except (KeyError, ValueError, TypeError) as exc:
        raise CacheRejected(f"header unusable: {exc}") from exc
    _require(U.dtype == np.uint64 and F.dtype == np.float64 and U.ndim == 1 and F.ndim == 1,
             "U/F dtype or rank")
    _check_packed(U, F, nf, nk)
    nt = int(U[3 + 7] - U[3 + 6] - 1)  # leaf_off has trees + 1 entries
    _require(int(header["num_trees"]) == nt and len(header["feature_names"]) == nf
             and all(isinstance(n, str) for n in header["feature_names"]), "header facts")
    g = {k[2:]: v for k, v in arrays.items() if k.startswith("g_")}
    if g:
        _require(g.keys() == _GENERAL.keys() and all(
            g[k].dtype == np.dtype(d) and g[k].ndim == (0 if k == "max_depth" else 1)
            for k, d in _GENERAL.items()), "general table types")
        _require(arrays.get("expected", np.zeros(0)).shape == (nt,)
                 and arrays["expected"].dtype == np.float64, "expected values")
        _check_general(g, nf, nt)
    return header  # type: ignore[no-any-return]


# walker.GeneralTables' fields and dtypes (a foreign dtype would make numba compile anew).
_GENERAL = {"node_off": "u8", "feat": "u8", "thr": "f8", "dtype": "u1", "left": "i8",
            "right": "i8", "cat_off": "u8", "cat_nw": "u8", "catbits": "u4",
            "leaf_off": "u8", "leafvals": "f8", "leaf_count": "f8", "node_count": "f8",
            "tree_class": "u8", "is_linear": "u1", "lin_const": "f8", "lin_start": "u8",
            "lin_feat": "u8", "lin_coeff": "f8", "max_depth": "i8"}


def _check_packed(U: U64, F: npt.NDArray[np.float64], nf: int, nk: int) -> None:
    """``kernels.pack_qs``'s layout: sections in bounds, every index inside its table."""
    from scorers.kernels import F_HEAD

    parts = 11
    head = 3 + parts + 1
    _require(U.size >= head and int(U[0]) == nf, "packed header")
    o = U[3:head].astype(np.int64)
    _require(o[0] == head and np.all(o[1:] >= o[:-1]) and o[-1] == U.size, "section offsets")
    sec = [U[o[i]:o[i + 1]] for i in range(parts)]
    e_tree, e_mask, starts, zflag, cat_info, catbits, leaf_off, tree_class = sec[:8]
    ct_info, ct_trees, ct_tab = sec[8:]
    nthr, cat_base = int(U[2]), int(U[1])
    _require(F.size >= F_HEAD + nthr, "threshold section")
    nleaves = F.size - F_HEAD - nthr
    _require(leaf_off.size >= 1, "leaf offsets")
    nt = leaf_off.size - 1
    _monotone(leaf_off, 0, nleaves, "leaf_off")
    per_tree = np.diff(leaf_off.astype(np.int64))
    _require(np.all(per_tree >= 1) and np.all(per_tree <= 64), "leaves per tree")
    _require(tree_class.size == nt and np.all(tree_class < max(nk, 1)), "tree classes")
    _require(e_tree.size == e_mask.size and np.all(e_tree < nt), "entry trees")
    _require(starts.size == 4 * (nf + 1), "region starts")
    st = starts.reshape(4, nf + 1).astype(np.int64)
    _require(np.all(np.diff(st, axis=1) >= 0) and st[0, 0] == 0 and st[0, -1] == nthr
             and np.all(st[1:, 0] == st[:-1, -1]) and st[3, -1] == e_tree.size
             and st[3, 0] == cat_base, "region starts")
    _require(zflag.size == nf, "zero flags")
    ncat = e_tree.size - cat_base
    _require(cat_info.size == 2 * ncat, "categorical entries")
    ci = cat_info.reshape(-1, 2)
    _require(_within(ci[:, 0], ci[:, 1], catbits.size), "categorical bitsets")
    _require(ct_info.size % 5 == 0, "category tables")
    lows_of = lambda trees: _low_bits(per_tree[trees.astype(np.int64)])  # noqa: E731
    # A mask may only clear leaves its tree has: the exit leaf (lowest set bit) then
    # always falls inside the tree's own leaf values.
    if e_tree.size:
        lows = lows_of(e_tree)
        _require(np.all((e_mask & lows) == lows), "entry masks")
    for f, c, t, tab_off, trees_off in ct_info.reshape(-1, 5).tolist():  # Python ints
        _require(f < nf and trees_off + t <= ct_trees.size
                 and tab_off + (c + 1) * t <= ct_tab.size, "category tables")
        trees = ct_trees[trees_off:trees_off + t]
        _require(np.all(trees < nt), "category table trees")
        tab = ct_tab[tab_off:tab_off + (c + 1) * t].reshape(c + 1, t)
        lows = lows_of(trees)
        _require(np.all((tab & lows) == lows), "category table masks")


def _within(off: U64, count: U64, size: int) -> bool:
    """Every ``off[i]:off[i] + count[i]`` inside ``size`` (no uint64 wrap-around)."""
    return bool(np.all(off <= size) and np.all(count <= size) and np.all(off + count <= size))


def _low_bits(n: npt.NDArray[np.int64]) -> U64:
    """Per count n: the word with bits n..63 set (the bits beyond a tree's leaves)."""
    ones = ~np.uint64(0)
    return np.where(n >= 64, np.uint64(0), ones << np.minimum(n, 63).astype(np.uint64))


def _check_general(g: dict[str, npt.NDArray[Any]], nf: int, nt: int) -> None:
    """``walker.GeneralTables`` (TreeSHAP's input): children, features, bitsets, leaves.

    Every tree must be a tree (each node but the root has one parent, all reachable)
    and ``max_depth`` at least its real depth: TreeSHAP sizes its path buffers by it.
    """
    try:
        node_off, leaf_off = g["node_off"].astype(np.int64), g["leaf_off"].astype(np.int64)
        _require(node_off.size == nt + 1 and leaf_off.size == nt + 1, "general offsets")
        _monotone(node_off, 0, g["feat"].size, "node_off")
        _monotone(leaf_off, 0, g["leafvals"].size, "leaf_off")
        nodes, leaves = int(node_off[-1]), int(leaf_off[-1])
        for name in ("thr", "dtype", "left", "right", "cat_off", "cat_nw", "node_count"):
            _require(g[name].size == nodes, f"general {name}")
        for name in ("leaf_count", "lin_const"):
            _require(g[name].size == leaves, f"general {name}")
        _require(g["tree_class"].size == nt and g["is_linear"].size == nt, "general trees")
        _require(np.all(g["feat"] < nf), "general features")
        _require(_within(g["cat_off"], g["cat_nw"], g["catbits"].size), "general bitsets")
        _monotone(g["lin_start"], 0, g["lin_feat"].size, "lin_start")
        _require(g["lin_start"].size == leaves + 1 and g["lin_coeff"].size == g["lin_feat"].size
                 and np.all(g["lin_feat"] < nf), "general linear leaves")
        n_int, n_leaf = np.diff(node_off), np.diff(leaf_off)
        _require(np.all(n_leaf == n_int + 1), "general leaf counts")
        _require(int(g["max_depth"]) >= _tree_depth(g["left"], g["right"], node_off, leaf_off),
                 "general depth")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise CacheRejected(f"general tables unusable: {exc}") from exc


def _tree_depth(left: npt.NDArray[np.int64], right: npt.NDArray[np.int64],
                node_off: npt.NDArray[np.int64], leaf_off: npt.NDArray[np.int64]) -> int:
    """Depth of the deepest leaf over all trees, or CacheRejected if one is not a tree."""
    nt = node_off.size - 1
    nodes = int(node_off[-1])
    if nodes == 0:
        return 0
    tree = np.repeat(np.arange(nt), np.diff(node_off))
    n_int, n_leaf = np.diff(node_off)[tree], np.diff(leaf_off)[tree]
    kids = np.concatenate([left, right]).astype(np.int64)
    owner = np.concatenate([tree, tree])
    _require(np.all((kids < np.concatenate([n_int, n_int]))
                     & (kids >= -np.concatenate([n_leaf, n_leaf]))), "general children")
    inner = kids >= 0
    child = np.where(inner, node_off[owner] + kids, nodes + leaf_off[owner] + ~kids)
    parents = np.bincount(child, minlength=nodes + int(leaf_off[-1]))
    roots = node_off[:-1][np.diff(node_off) > 0]
    lone = nodes + leaf_off[:-1][np.diff(node_off) == 0]  # one-leaf trees: the leaf is root
    expect = np.ones_like(parents)
    expect[roots] = 0
    expect[lone] = 0
    _require(np.array_equal(parents, expect), "general tree shape")
    # One parent each: walk down from the roots; whatever is never reached is a cycle.
    depth = np.full(parents.size, -1, np.int64)
    depth[roots] = 0
    depth[lone] = 0
    parent_of = np.concatenate([np.arange(nodes), np.arange(nodes)])
    for _ in range(int(np.diff(node_off).max()) + 1):
        known = depth[parent_of] >= 0
        if np.all(depth[child[known]] >= 0):
            break
        depth[child[known]] = depth[parent_of[known]] + 1
    _require(np.all(depth >= 0), "general tree shape")
    return int(depth[nodes:].max()) if depth.size > nodes else 0
