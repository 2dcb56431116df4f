"""Intermediate representation of a parsed LightGBM model: plain, validated arrays.

The scanner/parser (``scorers.textmodel``) fills these dataclasses; the kernel table
builders (``scorers.kernels``) and TreeSHAP (``scorers.shap``) read them. Nothing here
knows the text format or numba.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "CATEGORICAL_MASK",
    "DEFAULT_LEFT_MASK",
    "MISSING_NAN",
    "MISSING_NONE",
    "MISSING_ZERO",
    "ZERO_THRESHOLD",
    "ModelIR",
    "TreeIR",
]

# LightGBM's kZeroThreshold is the float literal 1e-35f, i.e. this double.
ZERO_THRESHOLD = 1.0000000180025095e-35
CATEGORICAL_MASK = 1
DEFAULT_LEFT_MASK = 2
MISSING_NONE = 0
MISSING_ZERO = 1
MISSING_NAN = 2

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]


@dataclass(frozen=True)
class TreeIR:
    """One tree, in LightGBM's own node numbering (children < 0 are ``~leaf``)."""

    num_leaves: int
    split_feature: I32
    threshold: F64
    decision_type: npt.NDArray[np.int8]
    left_child: I32
    right_child: I32
    leaf_value: F64
    leaf_count: F64
    internal_count: F64
    cat_boundaries: I32
    cat_threshold: npt.NDArray[np.uint32]
    is_linear: bool = False
    leaf_const: F64 = field(default_factory=lambda: np.zeros(0))
    leaf_features: tuple[I32, ...] = ()
    leaf_coeff: tuple[F64, ...] = ()

    @property
    def num_internal(self) -> int:
        return self.num_leaves - 1

    def max_depth(self) -> int:
        """Depth of the deepest leaf (root alone = 0)."""
        if self.num_leaves <= 1:
            return 0
        best, stack = 0, [(0, 0)]
        while stack:
            node, depth = stack.pop()
            if node < 0:
                best = max(best, depth)
                continue
            stack.append((int(self.left_child[node]), depth + 1))
            stack.append((int(self.right_child[node]), depth + 1))
        return best

    def leaves_in_order(self) -> list[int]:
        """Leaf ids from left to right (in-order), the numbering QuickScorer needs."""
        if self.num_leaves <= 1:
            return [0]
        out: list[int] = []
        stack = [0]
        while stack:
            node = stack.pop()
            if node < 0:
                out.append(~node)
                continue
            stack.append(int(self.right_child[node]))
            stack.append(int(self.left_child[node]))
        return out


@dataclass(frozen=True)
class ModelIR:
    """A whole model: header facts plus trees in LightGBM's storage order."""

    num_class: int
    num_tree_per_iteration: int
    max_feature_idx: int
    objective: str
    feature_names: tuple[str, ...]
    trees: tuple[TreeIR, ...]
    average_output: bool = False
    pandas_categorical: list[list[object]] | None = None
    feature_infos: tuple[str, ...] = ()

    @property
    def num_features(self) -> int:
        return self.max_feature_idx + 1

    @property
    def num_iterations(self) -> int:
        return len(self.trees) // max(self.num_tree_per_iteration, 1)
