"""``streamscore bench scorer``: compiled LightGBM vs ``Booster.predict`` (and lleaves/treelite).

Trains (or loads from ``<out>/models/``) a fraud-like model (binary, 500 trees × 63
leaves, 40 features of which 3 categorical, 5% NaN) and a pricing-like model (regression,
300 × 31, 20 numerical), then measures single-threaded rows/s at several batch sizes for
every engine side by side in one run, and reports ratios against LightGBM measured in
that same run, ns per visited node, compile/JIT time and the cached-restart time.
Writes ``scorer.json`` and ``scorer.png`` into ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

BATCHES = (1, 8, 64, 512, 10000)
MODELS = {
    # name: (objective, trees, leaves, features, categorical, nan fraction)
    "fraud": ("binary", 500, 63, 40, 3, 0.05),
    "pricing": ("regression", 300, 31, 20, 0, 0.0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``streamscore bench scorer`` (no heavy imports here)."""
    parser.add_argument("--quick", action="store_true",
                        help="short timing windows (0.2 s per point)")
    parser.add_argument("--out", default="benchmarks/out", metavar="PATH", help="report directory")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS),
                        help="which benchmark models to run")
    parser.add_argument("--seconds", type=float, default=None, metavar="S",
                        help="CPU seconds per measurement (default 1.0, --quick 0.2)")
    parser.add_argument("--retrain", action="store_true", help="ignore cached models")
    parser.add_argument("--sweep", action="store_true",
                        help="instead: the ratio to LightGBM over model shapes (leaves 15-1,023, "
                             "features 10-500, trees 50-3,000, categorical and NaN shares); "
                             "with --quick a shorter list (a few minutes)")
    parser.add_argument(
        "--foreign-python", default=os.environ.get("STREAMSCORE_BENCH_FOREIGN_PYTHON"),
        metavar="PATH",
        help="python of a separate virtualenv with lleaves / treelite + tl2cgen (they do not "
             "install beside numba 0.68); they are timed there, with LightGBM alongside "
             "for the ratio (default: $STREAMSCORE_BENCH_FOREIGN_PYTHON)")


def synthetic(name: str, n: int, seed: int = 0) -> tuple[Any, Any]:
    """Feature matrix and label for a benchmark model (deterministic)."""
    import numpy as np

    objective, _, _, nfeat, ncat, nan_frac = MODELS[name]
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, nfeat))
    for j in range(ncat):
        X[:, j] = rng.integers(0, [50, 12, 200][j % 3], n)
    w = rng.normal(size=nfeat)
    z = X[:, ncat:] @ w[ncat:] / np.sqrt(nfeat) + np.sin(X[:, -1] * 2)
    if ncat:
        z += (X[:, 0] % 7 == 0) * 1.5 - (X[:, 1] % 3 == 1)
    if nan_frac:
        X[rng.random(X.shape) < nan_frac] = np.nan
    noise = rng.normal(size=n)
    y = (z + noise > 1.2).astype(float) if objective == "binary" else 50 + 10 * z + 2 * noise
    return X, y


def build_model(name: str, cache_dir: Path, retrain: bool = False) -> Path:
    """Train the named model once and cache its text file."""
    path = cache_dir / f"{name}_like.txt"
    if path.exists() and not retrain:
        return path
    import lightgbm as lgb

    objective, trees, leaves, _, ncat, _ = MODELS[name]
    X, y = synthetic(name, 30000)
    params = {"objective": objective, "num_leaves": leaves, "learning_rate": 0.05,
              "min_data_in_leaf": 5, "verbose": -1, "num_threads": 2, "seed": 1,
              "max_bin": 255, "min_data_per_group": 20, "cat_smooth": 5}
    ds = lgb.Dataset(X, y, categorical_feature=list(range(ncat)) if ncat else "auto")
    from tqdm import tqdm

    with tqdm(total=trees, desc=f"training {name}-like", unit="tree") as bar:
        booster = lgb.train(params, ds, trees, callbacks=[lambda env: bar.update(1)])
    cache_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    return path


def _rates(fns: dict[str, Any], X: Any, seconds: float) -> dict[str, tuple[float, float]]:
    """Rows/s of every engine on X by process CPU time and by wall time (medians).

    Engines are timed in interleaved rounds (A, B, C, A, B, C, ...) so a change in the
    machine's load hits all of them alike. Every engine here is single-threaded, so CPU
    time is what a call costs; on a shared machine it is far less disturbed by other
    processes than wall time (both are reported).
    """
    import statistics

    n = X.shape[0]
    for fn in fns.values():
        fn(X)  # warm up (JIT, caches)
    # Group tiny calls so the clocks' resolution does not dominate.
    group = 1 if n >= 64 else 50
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    start = time.process_time()
    rounds = 0
    while rounds < 3 or (time.process_time() - start < seconds * len(fns) and rounds < 500):
        for name, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(group):
                fn(X)
            cpu[name].append((time.process_time() - c0) / group)
            wall[name].append((time.perf_counter() - w0) / group)
        rounds += 1
    return {k: (n / max(statistics.median(cpu[k]), 1e-9),
                n / max(statistics.median(wall[k]), 1e-9)) for k in fns}


def _visited_nodes(model: Any, X: Any) -> float:
    """Mean number of internal nodes a row visits (the classic traversal's work)."""
    import numpy as np

    ir = model.ir
    total = 0
    sample = X[:300]
    for tree in ir.trees:
        if tree.num_leaves <= 1:
            continue
        for row in sample:
            node = 0
            while node >= 0:
                total += 1
                node = _step(tree, row, node)
    return total / sample.shape[0] if sample.shape[0] else float(np.nan)


def _step(tree: Any, row: Any, node: int) -> int:
    import math

    f = int(tree.split_feature[node])
    dt = int(tree.decision_type[node])
    x = float(row[f])
    if dt & 1:
        if not (x > -1.0 and x < 2147483648.0):
            return int(tree.right_child[node])
        c = int(x)
        lo, hi = int(tree.cat_boundaries[int(tree.threshold[node])]), int(
            tree.cat_boundaries[int(tree.threshold[node]) + 1])
        w = c >> 5
        inset = w < hi - lo and (int(tree.cat_threshold[lo + w]) >> (c & 31)) & 1
        return int(tree.left_child[node] if inset else tree.right_child[node])
    x = 0.0 if abs(x) <= 1.0000000180025095e-35 else x
    mt = (dt >> 2) & 3
    if math.isnan(x) and mt != 2:
        x = 0.0
    if (mt == 1 and x == 0.0) or (mt == 2 and math.isnan(x)):
        return int(tree.left_child[node] if dt & 2 else tree.right_child[node])
    return int(tree.left_child[node] if x <= tree.threshold[node] else tree.right_child[node])


_STAGES = """
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import numpy as np
from scorers import compile_lightgbm
t1, c1 = time.perf_counter(), time.process_time()
m = compile_lightgbm({path!r}, cache_dir={cache})
t2, c2 = time.perf_counter(), time.process_time()
m.predict(np.zeros((1, m.num_features)))
t3, c3 = time.perf_counter(), time.process_time()
score_epoch = time.time()
m.predict(np.zeros((64, m.num_features)))
print(json.dumps({{"import_s": t1 - t0, "compile_lightgbm_s": t2 - t1,
                  "first_predict_s": t3 - t2, "score_epoch": score_epoch,
                  "import_cpu_s": c1 - c0, "compile_lightgbm_cpu_s": c2 - c1,
                  "first_predict_cpu_s": c3 - c2, "process_cpu_s": c3}}))
"""


def _child_stages(code: str, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter; its stage times plus process start -> score."""
    start = time.time()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=600, env=env)
    stages: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    stages["start_to_score_s"] = stages.pop("score_epoch") - start
    stages["load_to_score_s"] = stages["compile_lightgbm_s"] + stages["first_predict_s"]
    stages["load_to_score_cpu_s"] = (stages["compile_lightgbm_cpu_s"]
                                     + stages["first_predict_cpu_s"])
    return stages


def _startup_times(path: Path, out: Path) -> dict[str, Any]:
    """What a process pays before its first score, in fresh child processes.

    ``cold``: empty numba cache and no table cache (a new machine). ``new_model``: numba's
    cache warm (the kernels are generic, compiled once per machine), no tables cached for
    this model. ``restart``: both caches warm (a restarted worker). ``start_to_score``
    counts from before the process is spawned; ``load_to_score`` from
    ``compile_lightgbm`` to the first score (what a worker's ``load_model`` pays).
    """
    import tempfile

    tables = out / "cache"
    with tempfile.TemporaryDirectory() as tmp:
        cold = _child_stages(_STAGES.format(path=str(path), cache="False"),
                             {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba")})
    _child_stages(_STAGES.format(path=str(path), cache=repr(str(tables))))  # fill caches
    with tempfile.TemporaryDirectory() as tmp:
        new_model = _child_stages(_STAGES.format(path=str(path), cache=repr(tmp)))
    restarts = [_child_stages(_STAGES.format(path=str(path), cache=repr(str(tables))))
                for _ in range(3)]
    restart = min(restarts, key=lambda r: r["start_to_score_s"])
    return {"cold": cold, "new_model": new_model, "restart": restart,
            "cold_compile_s": cold["start_to_score_s"],
            "cached_restart_s": restart["start_to_score_s"],
            "cached_load_to_score_s": restart["load_to_score_s"],
            "cold_cpu_s": cold["process_cpu_s"], "cached_restart_cpu_s": restart["process_cpu_s"],
            "cached_load_to_score_cpu_s": restart["load_to_score_cpu_s"]}


def _contributions(model: Any, booster: Any, X: Any, seconds: float) -> dict[str, Any]:
    """CPU µs per row of TreeSHAP (ours vs ``pred_contrib``) and of Saabas, batch 1 and 64."""
    import numpy as np

    out: dict[str, Any] = {}
    for b in (1, 64):
        A = np.ascontiguousarray(X[:b])
        rates = _rates({"lightgbm_pred_contrib": lambda A: booster.predict(
                            A, pred_contrib=True, num_threads=1),
                        "streamscore_treeshap": model.contributions,
                        "streamscore_saabas": lambda A: model.contributions(A, "saabas")},
                       A, seconds)
        out[str(b)] = {k: 1e6 / cpu for k, (cpu, _) in rates.items()}
    return out


def _optional_engines(path: Path, so_dir: Path | None = None) -> dict[str, Any]:
    """lleaves, treelite's GTIL and tl2cgen, where importable (else a reason string)."""
    engines: dict[str, Any] = {}
    try:
        import lleaves  # type: ignore[import-not-found]

        lm = lleaves.Model(model_file=str(path))
        lm.compile()
        engines["lleaves"] = lambda X: lm.predict(X, n_jobs=1)
    except Exception as exc:
        engines["lleaves"] = f"unavailable ({type(exc).__name__}: {str(exc)[:80]})"
    try:
        import treelite  # type: ignore[import-not-found]
        import treelite.gtil  # type: ignore[import-not-found]

        tm = treelite.frontend.load_lightgbm_model(str(path))
        engines["treelite-gtil"] = lambda X: treelite.gtil.predict(tm, X, nthread=1)
    except Exception as exc:
        engines["treelite-gtil"] = f"unavailable ({type(exc).__name__}: {str(exc)[:80]})"
        return engines
    try:
        import tl2cgen  # type: ignore[import-not-found]

        # Compiling the generated C takes seconds to minutes: keep the library per model.
        where = so_dir if so_dir is not None else path.parent
        lib = where / f"{path.stem}-{path.stat().st_mtime_ns}.tl2cgen.so"
        if not lib.exists():
            tl2cgen.export_lib(tm, toolchain="gcc", libpath=str(lib), nthread=2,
                               params={"parallel_comp": 8})
        pred = tl2cgen.Predictor(str(lib), nthread=1)

        def tl2cgen_predict(X: Any) -> Any:
            # (rows, targets, classes) in tl2cgen 1.x; flattened to LightGBM's shape.
            got = pred.predict(tl2cgen.DMatrix(X)).reshape(X.shape[0], -1)
            return got[:, 0] if got.shape[1] == 1 else got

        engines["treelite-tl2cgen"] = tl2cgen_predict
    except Exception as exc:
        engines["treelite-tl2cgen"] = f"unavailable ({type(exc).__name__}: {str(exc)[:80]})"
    return engines


def _foreign_child(argv: list[str]) -> int:
    """Entry point when this file runs under another venv's python (stdlib + numpy only).

    Times LightGBM and every optional engine on the parent's rows, interleaved, and
    prints JSON: rows/s by CPU and wall time, and the largest difference to LightGBM.
    """
    import numpy as np

    model_path, rows_path, seconds, batches = argv[0], argv[1], float(argv[2]), argv[3]
    import lightgbm as lgb

    X = np.load(rows_path)
    booster = lgb.Booster(model_file=model_path)
    ref = booster.predict(X[:2000])
    engines = _optional_engines(Path(model_path), Path(rows_path).parent)
    runnable: dict[str, Any] = {"lightgbm": lambda A: booster.predict(A, num_threads=1)}
    diffs: dict[str, float] = {}
    for name, fn in engines.items():
        if callable(fn):
            got = np.asarray(fn(X[:2000])).reshape(np.shape(ref))
            diffs[name] = float(np.max(np.abs(got - ref)))
            runnable[name] = fn
    rates: dict[str, dict[str, list[float]]] = {}
    for b in (int(v) for v in batches.split(",")):
        A = np.ascontiguousarray(X[:b])
        for e, (cpu_rate, wall_rate) in _rates(runnable, A, seconds).items():
            rates.setdefault(e, {})[str(b)] = [cpu_rate, wall_rate]
    versions = {}
    for mod in ("lightgbm", "lleaves", "treelite", "tl2cgen", "llvmlite", "numpy"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # an absent package has no version to report
            continue
    print(json.dumps({"rates": rates, "max_abs_diff": diffs, "versions": versions,
                      "unavailable": {k: v for k, v in engines.items() if not callable(v)}}))
    return 0


def _foreign_engines(python: str, path: Path, X: Any, seconds: float,
                     batches: tuple[int, ...], out: Path) -> dict[str, Any]:
    """Run ``_foreign_child`` under ``python``; its ratios are against its own LightGBM."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    rows = out / f"{path.stem}-rows.npy"
    np.save(rows, X)
    try:
        done = subprocess.run(
            [python, str(Path(__file__).resolve()), "--foreign-child", str(path), str(rows),
             str(seconds), ",".join(map(str, batches))],
            capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    lgb_rates = report["rates"].get("lightgbm", {})
    report["ratio"] = {e: {b: r[0] / lgb_rates[b][0] for b, r in per.items()}
                       for e, per in report["rates"].items()}
    return report


def bench_model(name: str, path: Path, seconds: float, batches: tuple[int, ...],
                foreign_python: str | None = None, out: Path | None = None) -> dict[str, Any]:
    import lightgbm as lgb
    import numpy as np

    from scorers import compile_lightgbm

    t = time.perf_counter()
    model = compile_lightgbm(path)
    parse_s = time.perf_counter() - t
    X, _ = synthetic(name, max(batches), seed=42)
    t = time.perf_counter()
    model.predict(X[:1])
    model.predict(X[:64])
    first_call_s = time.perf_counter() - t
    booster = lgb.Booster(model_file=str(path))
    ref = booster.predict(X[:2000])
    assert np.allclose(model.predict(X[:2000]), ref, rtol=0, atol=1e-12), "compiled != LightGBM"
    engines: dict[str, Any] = {
        "lightgbm": lambda A: booster.predict(A, num_threads=1),
        "streamscore": model.predict,
        "streamscore-general": model.predict_general,
    }
    if foreign_python is None:
        engines.update(_optional_engines(path, out))
    visited = _visited_nodes(model, X)
    results: dict[str, dict[str, float]] = {}
    wall_results: dict[str, dict[str, float]] = {}
    from rich.progress import track

    runnable = {k: v for k, v in engines.items() if callable(v)}
    for b in track(batches, description=f"timing {name}-like", transient=True):
        A = np.ascontiguousarray(X[:b])
        for e, (cpu_rate, wall_rate) in _rates(runnable, A, seconds).items():
            results.setdefault(e, {})[str(b)] = cpu_rate
            wall_results.setdefault(e, {})[str(b)] = wall_rate
    ratios = {e: {b: r / results["lightgbm"][b] for b, r in per.items()}
              for e, per in results.items()}
    ns_per_visit = {e: {b: 1e9 / (r * visited) for b, r in per.items()}
                    for e, per in results.items()}
    foreign = (_foreign_engines(foreign_python, path, X, seconds, batches,
                                out or path.parent) if foreign_python else None)
    return {
        "model": name, "path": str(path), "trees": model.num_trees,
        "features": model.num_features, "kernel": model.kernel,
        "visited_nodes_per_row": visited, "parse_and_tables_s": parse_s,
        "first_call_jit_or_cache_s": first_call_s, "rows_per_s": results,
        "rows_per_s_wall": wall_results, "ratio": ratios,
        "ns_per_visited_node": ns_per_visit,
        "unavailable": {k: v for k, v in engines.items() if not callable(v)},
        "foreign": foreign,
        "contributions_us_per_row": _contributions(model, booster, X, seconds),
    }


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["models"]
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), squeeze=False)
    for ax, run_ in zip(axes[0], runs, strict=True):
        for engine, per in run_["rows_per_s"].items():
            bs = [int(b) for b in per]
            ax.plot(bs, list(per.values()), marker="o", label=engine)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("batch size (rows per call)")
        ax.set_ylabel("rows/s (1 thread)")
        ax.set_title(f"{run_['model']}-like: {run_['trees']} trees")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"scorer throughput, load avg {report['load_avg'][0]:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write JSON and PNG."""
    from rich.console import Console
    from rich.table import Table

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.seconds if args.seconds is not None else (0.2 if args.quick else 1.0)
    if getattr(args, "sweep", False):
        from benchmarks.scorer_sweep import run_sweep

        return run_sweep(out, args.quick, seconds)
    batches = BATCHES
    names = getattr(args, "models", sorted(MODELS))
    report: dict[str, Any] = {"load_avg": os.getloadavg(), "cpu_count": os.cpu_count(),
                              "seconds_per_point": seconds, "models": []}
    for name in names:
        path = build_model(name, out / "models", getattr(args, "retrain", False))
        result = bench_model(name, path, seconds, batches,
                             getattr(args, "foreign_python", None), out)
        result.update(_startup_times(path, out))
        report["models"].append(result)
    report["load_avg_after"] = os.getloadavg()
    (out / "scorer.json").write_text(json.dumps(report, indent=2))
    _plot(report, out / "scorer.png")
    console = Console()
    for r in report["models"]:
        table = Table(title=f"{r['model']}-like ({r['trees']} trees, kernel {r['kernel']}, "
                            f"{r['visited_nodes_per_row']:.0f} visited nodes/row)")
        table.add_column("engine")
        for b in batches:
            table.add_column(f"batch {b}", justify="right")
        for engine, per in r["rows_per_s"].items():
            cells = [f"{per[str(b)]:,.0f}/s ({r['ratio'][engine][str(b)]:.1f}x)"
                     for b in batches]
            table.add_row(engine, *cells)
        ns = r["ns_per_visited_node"]["streamscore"]
        table.caption = (
            f"rows/s by CPU time (ratio vs lightgbm); ns/visited node: {ns['512']:.2f} "
            f"(batch 512), {ns['10000']:.2f} (batch 10000); cold parse+tables+JIT "
            f"{r['cold_compile_s']:.2f}s wall / {r['cold_cpu_s']:.2f}s CPU; cached restart: "
            f"process start -> first score {r['cached_restart_s']:.2f}s wall / "
            f"{r['cached_restart_cpu_s']:.2f}s CPU, compile_lightgbm -> first score "
            f"{r['cached_load_to_score_s']:.2f}s / {r['cached_load_to_score_cpu_s']:.2f}s CPU; "
            f"new model, warm numba cache: {r['new_model']['load_to_score_s']:.2f}s / "
            f"{r['new_model']['load_to_score_cpu_s']:.2f}s CPU; "
            f"unavailable: {r['unavailable']}")
        console.print(table)
        shap = r["contributions_us_per_row"]
        console.print("contributions, CPU µs per row: " + "; ".join(
            f"batch {b}: " + ", ".join(f"{k} {v:,.0f}" for k, v in per.items())
            for b, per in shap.items()))
        foreign = r.get("foreign")
        if foreign and "ratio" in foreign:
            ft = Table(title=f"{r['model']}-like, separate venv (ratio vs its own LightGBM run)")
            ft.add_column("engine")
            for b in batches:
                ft.add_column(f"batch {b}", justify="right")
            for engine, per in foreign["rates"].items():
                ft.add_row(engine, *[f"{per[str(b)][0]:,.0f}/s "
                                     f"({foreign['ratio'][engine][str(b)]:.1f}x)"
                                     for b in batches])
            ft.caption = (f"max |diff| vs LightGBM {foreign['max_abs_diff']}; "
                          f"{foreign['versions']}; unavailable: {foreign['unavailable']}")
            console.print(ft)
        elif foreign:
            console.print(f"foreign engines failed: {foreign.get('error')}")
    console.print(f"load average before {report['load_avg']}, after {report['load_avg_after']}; "
                  f"report in {out}/scorer.json, plot {out}/scorer.png")
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--foreign-child"]:
    sys.exit(_foreign_child(sys.argv[2:]))
