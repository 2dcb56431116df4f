"""``streamscore bench scorer --sweep``: the compiled scorer over many model shapes.

Every shape (leaves, features, trees, categorical share, NaN share) is a model written
in LightGBM's own text format by a generator that grows trees leaf-wise the way
LightGBM does (a leaf holding more rows is likelier to be split), so a 3,000-tree or
1,023-leaf model costs milliseconds instead of minutes of training. LightGBM loads the
same text and is the reference: each shape is checked for equal outputs before it is
timed. Reported per shape: the ratio to ``Booster.predict(num_threads=1)`` at batch 1
and 512 (CPU time, interleaved rounds), ns per visited node (the nodes a plain walk
visits, from LightGBM's own ``pred_leaf``), the kernel chosen and the build time.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FULL", "QUICK", "Shape", "model_text", "plot", "rows", "run_sweep", "sweep"]

NCAT_VALUES = 40  # categories per categorical feature
# (leaves, features, trees, categorical share of features, NaN share of values)
Shape = tuple[int, int, int, float, float]
BASE: Shape = (63, 40, 300, 0.1, 0.05)
FULL: list[Shape] = [
    *[(leaves, 40, 300, 0.1, 0.05) for leaves in (15, 31, 63, 127, 255, 511, 1023)],
    *[(63, nf, 300, 0.1, 0.05) for nf in (10, 100, 500)],
    *[(63, 40, trees, 0.1, 0.05) for trees in (50, 1000, 3000)],
    (255, 40, 1000, 0.1, 0.05),
    *[(255, 40, 300, cat, nan) for cat, nan in ((0.0, 0.0), (0.5, 0.05), (0.1, 0.5))],
    *[(31, 40, 300, cat, nan) for cat, nan in ((0.0, 0.0), (0.5, 0.05), (0.1, 0.5))],
]
QUICK: list[Shape] = [
    (15, 10, 50, 0.0, 0.0), (63, 40, 300, 0.1, 0.05), (127, 40, 300, 0.1, 0.05),
    (255, 40, 300, 0.1, 0.05), (1023, 40, 100, 0.1, 0.05), (63, 500, 300, 0.1, 0.05),
    (31, 40, 3000, 0.1, 0.05), (255, 40, 300, 0.5, 0.05), (255, 40, 300, 0.1, 0.5),
]


def _fmt(values: Any) -> str:
    return " ".join(repr(float(v)) if isinstance(v, float) else str(v) for v in values)


def _tree(rng: np.random.Generator, leaves: int, nf: int, ncat: int, nan: float
          ) -> tuple[str, np.ndarray]:
    """One tree's text block, grown leaf-wise; also each leaf's depth."""
    # Every leaf has a row mass; the next split takes a leaf with probability ∝ mass
    # (as LightGBM's best-gain leaf tends to be a large one) and divides its mass.
    mass = [1.0]
    parent = [-1]  # parent node of each leaf (-1: root), and whether it is its right child
    side = [0]
    depth = [0]
    feat: list[int] = []
    thr: list[float] = []
    dtype: list[int] = []
    left: list[int] = []
    right: list[int] = []
    cat_bounds = [0]
    cat_words: list[int] = []
    for node in range(leaves - 1):
        p = np.array(mass) / sum(mass)
        leaf = int(rng.choice(len(mass), p=p))
        f = int(rng.integers(nf))
        if f < ncat:
            chosen = np.zeros(32 * math.ceil(NCAT_VALUES / 32), bool)
            chosen[:NCAT_VALUES] = rng.random(NCAT_VALUES) < 0.3
            words = [int(np.packbits(chosen[w:w + 32], bitorder="little").view("<u4")[0])
                     for w in range(0, chosen.size, 32)]
            thr.append(float(len(cat_bounds) - 1))
            cat_words.extend(words)
            cat_bounds.append(len(cat_words))
            dtype.append(1)
        else:
            thr.append(float(np.round(rng.normal() * 0.9, 6)))
            dtype.append((8 if nan > 0 else 0) | (2 if rng.random() < 0.5 else 0))
        feat.append(f)
        # The split leaf becomes this node: its parent points here instead of ~leaf.
        if parent[leaf] >= 0:
            (right if side[leaf] else left)[parent[leaf]] = node
        u = float(rng.beta(2, 2))
        new = len(mass)
        left.append(~leaf)
        right.append(~new)
        mass.append(mass[leaf] * (1 - u))
        mass[leaf] *= u
        d = depth[leaf] + 1
        parent[leaf], side[leaf], depth[leaf] = node, 0, d
        parent.append(node)
        side.append(1)
        depth.append(d)
    values = rng.normal(size=leaves) * 0.05
    counts = np.maximum(1, np.round(np.array(mass) * 10000)).astype(int)
    lines = [f"num_leaves={leaves}", f"num_cat={len(cat_bounds) - 1}"]
    if leaves > 1:
        n_int = leaves - 1
        lines += [f"split_feature={_fmt(feat)}", f"split_gain={_fmt([1.0] * n_int)}",
                  f"threshold={_fmt(thr)}", f"decision_type={_fmt(dtype)}",
                  f"left_child={_fmt(left)}", f"right_child={_fmt(right)}"]
    lines += [f"leaf_value={_fmt(values.tolist())}",
              f"leaf_weight={_fmt(counts.astype(float).tolist())}",
              f"leaf_count={_fmt(counts.tolist())}"]
    if leaves > 1:
        lines += [f"internal_value={_fmt([0.0] * (leaves - 1))}",
                  f"internal_weight={_fmt([1.0] * (leaves - 1))}",
                  f"internal_count={_fmt([1] * (leaves - 1))}"]
    if len(cat_bounds) > 1:
        lines += [f"cat_boundaries={_fmt(cat_bounds)}", f"cat_threshold={_fmt(cat_words)}"]
    lines += ["is_linear=0", "shrinkage=1"]
    return "\n".join(lines), np.array(depth)


def model_text(shape: Shape, seed: int = 0) -> tuple[str, list[np.ndarray]]:
    """A binary model of ``shape`` in LightGBM's text format, and each tree's leaf depths."""
    leaves, nf, trees, cat_share, nan = shape
    ncat = round(cat_share * nf)
    rng = np.random.default_rng(seed)
    infos = [":".join(str(c) for c in range(NCAT_VALUES)) for _ in range(ncat)]
    infos += ["[-4:4]"] * (nf - ncat)
    head = ["tree", "version=v4", "num_class=1", "num_tree_per_iteration=1", "label_index=0",
            f"max_feature_idx={nf - 1}", "objective=binary sigmoid:1",
            "feature_names=" + " ".join(f"f{j}" for j in range(nf)),
            "feature_infos=" + " ".join(infos), ""]
    blocks, depths = [], []
    for t in range(trees):
        block, depth = _tree(rng, leaves, nf, ncat, nan)
        blocks.append(f"Tree={t}\n{block}\n\n")
        depths.append(depth)
    tail = "\nend of trees\n\npandas_categorical:null\n"
    text = "\n".join(head) + "\n" + "\n".join(blocks) + tail
    return text, depths


def rows(shape: Shape, n: int, seed: int = 1) -> np.ndarray:
    """Rows for ``shape``: N(0, 1) numeric values, categories 0..39 (a few unseen), NaN."""
    _, nf, _, cat_share, nan = shape
    ncat = round(cat_share * nf)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, nf))
    X[:, :ncat] = rng.integers(0, NCAT_VALUES + 3, (n, ncat))
    X[rng.random(X.shape) < nan] = np.nan
    return X


def sweep(shapes: list[Shape], seconds: float) -> list[dict[str, Any]]:
    """Time every shape; one dict per shape (see the module docstring)."""
    import lightgbm as lgb

    from benchmarks.bench_scorer import _rates
    from scorers import compile_lightgbm

    results = []
    for shape in shapes:
        text, depths = model_text(shape)
        booster = lgb.Booster(model_str=text)
        t0 = time.perf_counter()
        model = compile_lightgbm(text, cache_dir=False)
        model.predict(rows(shape, 1))
        build_s = time.perf_counter() - t0
        X = rows(shape, 2000)
        ref = booster.predict(X)
        diff = float(np.max(np.abs(model.predict(X) - ref)))
        one = float(np.max(np.abs(model.predict(X[:1]) - ref[:1])))
        assert max(diff, one) <= 1e-12, f"compiled != LightGBM on {shape}: {diff}, {one}"
        leaf = booster.predict(X[:500], pred_leaf=True).astype(np.int64)
        visited = float(np.mean(sum(depths[t][leaf[:, t]] for t in range(leaf.shape[1]))))
        entry: dict[str, Any] = {
            "leaves": shape[0], "features": shape[1], "trees": shape[2],
            "categorical_share": shape[3], "nan_share": shape[4], "kernel": model.kernel,
            "build_s": build_s, "visited_nodes_per_row": visited}
        for b in (1, 512):
            A = np.ascontiguousarray(X[:b])
            rates = _rates({"lightgbm": partial(booster.predict, num_threads=1),
                            "streamscore": model.predict}, A, seconds)
            entry[f"ratio_{b}"] = rates["streamscore"][0] / rates["lightgbm"][0]
            for engine, key in (("streamscore", "ns_per_node"),
                                ("lightgbm", "lightgbm_ns_per_node")):
                entry[f"{key}_{b}"] = (1e9 / (rates[engine][0] * visited) if visited
                                       else float("nan"))  # stumps visit no node
        results.append(entry)
    return results


def plot(results: list[dict[str, Any]], path: Path, load: tuple[float, ...]) -> None:
    """Bar chart of the ratio per shape at batch 1 and 512, with the 6x and 8x targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['leaves']}L/{r['features']}F/{r['trees']}T\nc{r['categorical_share']:g} "
              f"n{r['nan_share']:g}" for r in results]
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(results)), 4.5))
    ax.bar(x - 0.2, [r["ratio_1"] for r in results], 0.4, label="batch 1")
    ax.bar(x + 0.2, [r["ratio_512"] for r in results], 0.4, label="batch 512")
    ax.axhline(6, color="C0", ls="--", lw=1, label="target batch 1 (6x)")
    ax.axhline(8, color="C1", ls="--", lw=1, label="target batch 512 (8x)")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xticks(x, labels, fontsize=7, rotation=35, ha="right")
    ax.set_xlabel("leaves/features/trees, categorical share c, NaN share n")
    ax.set_ylabel("x Booster.predict(num_threads=1)")
    ax.set_title(f"compiled scorer by model shape (CPU time, load avg {load[0]:.2f})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_sweep(out: Path, quick: bool, seconds: float) -> int:
    """Run the sweep (``QUICK`` or ``FULL``), print the table, write JSON and PNG to ``out``."""
    import json
    import os

    from rich.console import Console
    from rich.table import Table

    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    results = sweep(QUICK if quick else FULL, seconds)
    report = {"load_avg": load, "load_avg_after": os.getloadavg(), "cpu_count": os.cpu_count(),
              "seconds_per_point": seconds, "shapes": results}
    (out / "scorer_sweep.json").write_text(json.dumps(report, indent=2))
    plot(results, out / "scorer_sweep.png", load)
    table = Table(title="compiled scorer by model shape, x Booster.predict(num_threads=1)")
    for col in ("leaves", "features", "trees", "cat", "NaN", "kernel", "build s",
                "nodes/row", "x batch 1", "x batch 512", "ns/node 1", "ns/node 512",
                "lgb ns/node 512"):
        table.add_column(col, justify="left" if col == "kernel" else "right")
    for r in results:
        table.add_row(str(r["leaves"]), str(r["features"]), str(r["trees"]),
                      f"{r['categorical_share']:g}", f"{r['nan_share']:g}", r["kernel"],
                      f"{r['build_s']:.2f}", f"{r['visited_nodes_per_row']:,.0f}",
                      f"{r['ratio_1']:.1f}", f"{r['ratio_512']:.1f}",
                      f"{r['ns_per_node_1']:.1f}", f"{r['ns_per_node_512']:.2f}",
                      f"{r['lightgbm_ns_per_node_512']:.1f}")
    table.caption = (f"CPU time, interleaved rounds, {seconds:g} s per point; targets 6x at "
                     f"batch 1, 8x at batch 512; build = compile_lightgbm + first predict "
                     f"(warm numba cache, no table cache); load average {load[0]:.2f} before, "
                     f"{report['load_avg_after'][0]:.2f} after; {out}/scorer_sweep.png")
    Console(width=max(Console().width, 150)).print(table)
    return 0
