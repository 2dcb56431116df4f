"""Scan and parse LightGBM's text model format into a validated ``ModelIR``.

The kernels index arrays without bounds checks, so everything they will index is
checked here: a corrupt, truncated or unsupported model raises ``ModelFormatError``
naming the tree and field, never reaches compiled code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from scorers.exceptions import ModelFormatError
from scorers.ir import CATEGORICAL_MASK, ModelIR, TreeIR

__all__ = ["parse_model"]

def _blocks(lines: list[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``("header", kv)`` then ``("Tree=i", kv)`` per tree, then ``("end", {})``."""
    i, n = 0, len(lines)
    header: dict[str, str] = {}
    while i < n and not lines[i].startswith("Tree="):
        line = lines[i].strip()
        if line == "end of trees":
            break
        if "=" in line:
            key, _, value = line.partition("=")
            header[key] = value
        elif line:
            header[line] = ""
        i += 1
    yield "header", header
    while i < n:
        line = lines[i].strip()
        if line == "end of trees":
            yield "end", {}
            return
        if line.startswith("Tree="):
            name = line
            kv: dict[str, str] = {}
            i += 1
            while i < n and lines[i].strip() and not lines[i].startswith("Tree="):
                key, sep, value = lines[i].partition("=")
                if not sep:
                    raise ModelFormatError(
                        f"{name}: malformed line {lines[i][:60]!r} (truncated or corrupt file)")
                kv[key.strip()] = value.strip()
                i += 1
            yield name, kv
            continue
        i += 1
    # No "end of trees": the file was cut short.


def _ints(where: str, kv: dict[str, str], key: str, count: int) -> npt.NDArray[np.int64]:
    text = kv.get(key)
    if text is None:
        raise ModelFormatError(f"{where}: missing field {key!r}")
    try:
        arr = np.array(text.split(), dtype=np.int64) if count else np.zeros(0, np.int64)
    except (ValueError, OverflowError) as exc:
        raise ModelFormatError(f"{where}: field {key!r} is not a list of integers") from exc
    if arr.shape[0] != count:
        raise ModelFormatError(
            f"{where}: field {key!r} has {arr.shape[0]} values, expected {count}")
    return arr


def _floats(where: str, kv: dict[str, str], key: str, count: int) -> npt.NDArray[np.float64]:
    text = kv.get(key)
    if text is None:
        raise ModelFormatError(f"{where}: missing field {key!r}")
    try:
        arr = np.array(text.split(), dtype=np.float64) if count else np.zeros(0)
    except ValueError as exc:
        raise ModelFormatError(f"{where}: field {key!r} is not a list of numbers") from exc
    if arr.shape[0] != count:
        raise ModelFormatError(
            f"{where}: field {key!r} has {arr.shape[0]} values, expected {count}")
    return arr


def _check_structure(where: str, left: npt.NDArray[np.int64], right: npt.NDArray[np.int64],
                     num_leaves: int) -> None:
    """The children must form one binary tree: every node and leaf reached exactly once."""
    internal = num_leaves - 1
    for name, arr in (("left_child", left), ("right_child", right)):
        if arr.size and (arr.min() < -num_leaves or arr.max() >= internal):
            raise ModelFormatError(f"{where}: {name} points outside the tree")
    seen_nodes = np.zeros(internal, dtype=bool)
    seen_leaves = np.zeros(num_leaves, dtype=bool)
    stack = [0]
    while stack:
        node = stack.pop()
        if node < 0:
            if seen_leaves[~node]:
                raise ModelFormatError(f"{where}: leaf {~node} is reached twice")
            seen_leaves[~node] = True
            continue
        if seen_nodes[node]:
            raise ModelFormatError(f"{where}: node {node} is reached twice (cycle)")
        seen_nodes[node] = True
        stack.append(int(left[node]))
        stack.append(int(right[node]))
    if not (seen_nodes.all() and seen_leaves.all()):
        raise ModelFormatError(f"{where}: some nodes or leaves are unreachable from the root")


def _parse_tree(where: str, kv: dict[str, str], num_features: int) -> TreeIR:
    if "num_leaves" not in kv:
        raise ModelFormatError(f"{where}: missing field 'num_leaves'")
    try:
        num_leaves = int(kv["num_leaves"])
        num_cat = int(kv.get("num_cat", "0"))
    except ValueError as exc:
        raise ModelFormatError(f"{where}: num_leaves/num_cat is not an integer") from exc
    if num_leaves < 1 or num_cat < 0:
        raise ModelFormatError(f"{where}: num_leaves={num_leaves} num_cat={num_cat} is invalid")
    internal = num_leaves - 1
    leaf_value = _floats(where, kv, "leaf_value", num_leaves)
    empty = np.zeros(0, np.int64)
    # A single-leaf tree may omit its (empty) node arrays.
    split_feature = _ints(where, kv, "split_feature", internal) if internal else empty
    threshold = _floats(where, kv, "threshold", internal) if internal else np.zeros(0)
    decision_type = _ints(where, kv, "decision_type", internal) if internal else empty
    left = _ints(where, kv, "left_child", internal) if internal else empty
    right = _ints(where, kv, "right_child", internal) if internal else empty
    if internal:
        if split_feature.min() < 0 or split_feature.max() >= num_features:
            raise ModelFormatError(f"{where}: split_feature outside 0..{num_features - 1}")
        if decision_type.min() < 0 or decision_type.max() > 127:
            raise ModelFormatError(f"{where}: decision_type outside 0..127")
        if ((decision_type >> 2) & 3).max() > 2:
            raise ModelFormatError(f"{where}: unknown missing type in decision_type")
        _check_structure(where, left, right, num_leaves)
        if np.isnan(threshold).any():
            raise ModelFormatError(f"{where}: threshold contains NaN")
    # Counts only feed TreeSHAP; older or hand-written files may lack them.
    leaf_count = (_floats(where, kv, "leaf_count", num_leaves) if "leaf_count" in kv
                  else np.ones(num_leaves))
    internal_count = (_floats(where, kv, "internal_count", internal) if "internal_count" in kv
                      else np.zeros(internal))
    is_cat = (decision_type & CATEGORICAL_MASK) != 0
    if num_cat > 0:
        cat_boundaries = _ints(where, kv, "cat_boundaries", num_cat + 1)
        total = int(cat_boundaries[-1])
        cat_threshold = _ints(where, kv, "cat_threshold", total)
        if cat_boundaries[0] != 0 or np.any(np.diff(cat_boundaries) < 0):
            raise ModelFormatError(f"{where}: cat_boundaries are not increasing from 0")
        if cat_threshold.size and (cat_threshold.min() < 0 or cat_threshold.max() > 0xFFFFFFFF):
            raise ModelFormatError(f"{where}: cat_threshold words are not 32-bit")
        idx = threshold[is_cat]
        if idx.size and (np.any(idx != np.floor(idx)) or idx.min() < 0 or idx.max() >= num_cat):
            raise ModelFormatError(f"{where}: categorical split points to a missing bitset")
    else:
        if is_cat.any():
            raise ModelFormatError(f"{where}: categorical split but num_cat=0")
        cat_boundaries = np.zeros(1, np.int64)
        cat_threshold = np.zeros(0, np.int64)
    is_linear = kv.get("is_linear", "0").strip() == "1"
    leaf_const = np.zeros(0)
    feats: tuple[npt.NDArray[np.int32], ...] = ()
    coeffs: tuple[npt.NDArray[np.float64], ...] = ()
    if is_linear:
        leaf_const = _floats(where, kv, "leaf_const", num_leaves)
        nfeat = _ints(where, kv, "num_features", num_leaves)
        if nfeat.size and nfeat.min() < 0:
            raise ModelFormatError(f"{where}: negative num_features")
        total = int(nfeat.sum())
        flat_f = _ints(where, kv, "leaf_features", total)
        flat_c = _floats(where, kv, "leaf_coeff", total)
        if flat_f.size and (flat_f.min() < 0 or flat_f.max() >= num_features):
            raise ModelFormatError(f"{where}: leaf_features outside the model's features")
        cuts = np.cumsum(nfeat)[:-1]
        feats = tuple(a.astype(np.int32) for a in np.split(flat_f, cuts))
        coeffs = tuple(a.astype(np.float64) for a in np.split(flat_c, cuts))
    return TreeIR(
        num_leaves=num_leaves,
        split_feature=split_feature.astype(np.int32),
        threshold=threshold,
        decision_type=decision_type.astype(np.int8),
        left_child=left.astype(np.int32),
        right_child=right.astype(np.int32),
        leaf_value=leaf_value,
        leaf_count=leaf_count,
        internal_count=internal_count,
        cat_boundaries=cat_boundaries.astype(np.int32),
        cat_threshold=cat_threshold.astype(np.uint32),
        is_linear=is_linear,
        leaf_const=leaf_const,
        leaf_features=feats,
        leaf_coeff=coeffs,
    )


def _pandas_categorical(lines: list[str]) -> list[list[object]] | None:
    for line in reversed(lines[-3:]):
        if line.startswith("pandas_categorical:"):
            try:
                value = json.loads(line[len("pandas_categorical:"):])
            except json.JSONDecodeError as exc:
                raise ModelFormatError("pandas_categorical line is not valid JSON") from exc
            if value is not None and not (isinstance(value, list)
                                          and all(isinstance(v, list) for v in value)):
                raise ModelFormatError("pandas_categorical is not a list of lists")
            return value
    return None


def parse_model(text: str) -> ModelIR:
    """Parse LightGBM model text (as written by ``Booster.save_model``) into a ``ModelIR``."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "tree":
        raise ModelFormatError("not a LightGBM text model (first line is not 'tree')")
    blocks = _blocks(lines)
    _, header = next(blocks)
    version = header.get("version", "")
    if version not in ("v2", "v3", "v4"):
        raise ModelFormatError(f"unsupported model version {version!r} (expected v2..v4)")
    try:
        num_class = int(header["num_class"])
        ntpi = int(header.get("num_tree_per_iteration", header["num_class"]))
        max_feature_idx = int(header["max_feature_idx"])
    except (KeyError, ValueError) as exc:
        raise ModelFormatError(f"model header lacks or garbles {exc}") from exc
    if num_class < 1 or ntpi < 1 or max_feature_idx < 0:
        raise ModelFormatError("model header has non-positive num_class/num_tree_per_iteration")
    num_features = max_feature_idx + 1
    names = tuple(header.get("feature_names", "").split())
    if len(names) != num_features:
        raise ModelFormatError(
            f"feature_names has {len(names)} names but max_feature_idx says {num_features}")
    infos = tuple(header.get("feature_infos", "").split())
    trees: list[TreeIR] = []
    ended = False
    for name, kv in blocks:
        if name == "end":
            ended = True
            break
        trees.append(_parse_tree(f"{name} (tree {len(trees)})", kv, num_features))
    if not ended:
        raise ModelFormatError(
            f"model text is truncated: 'end of trees' not found after {len(trees)} trees")
    sizes = header.get("tree_sizes")
    if sizes is not None and len(sizes.split()) != len(trees):
        raise ModelFormatError(
            f"model text is truncated: tree_sizes lists {len(sizes.split())} trees, "
            f"found {len(trees)}")
    if len(trees) % ntpi:
        raise ModelFormatError(
            f"{len(trees)} trees is not a multiple of num_tree_per_iteration={ntpi}")
    return ModelIR(
        num_class=num_class,
        num_tree_per_iteration=ntpi,
        max_feature_idx=max_feature_idx,
        objective=header.get("objective", "custom").strip(),
        feature_names=names,
        trees=tuple(trees),
        average_output="average_output" in header,
        pandas_categorical=_pandas_categorical(lines),
        feature_infos=infos,
    )
