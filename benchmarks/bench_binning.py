"""Time the drift monitor's binning kernel alone (``stream.drift.stats.accumulate``).

One 512 x 40 float64 batch with ``bench drift``'s fraud-like layout (5 categorical
features, 5% NaN, plus the score as the 41st feature), binned into a fresh count array:
the minimum over many repeats warm, and "cold": each call right after a sweep over a
memory buffer (as the worker runs the drift update right after scoring). Prints the
minimum and median CPU microseconds per batch. Run ``python -m benchmarks.bench_binning``
from the tree whose kernel you time (``PYTHONPATH`` = that tree).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.bench_drift import CATEGORICAL, FEATURES, _synthetic

__all__ = ["main"]


def main() -> None:
    """Print warm and cold per-batch times of the binning kernel."""
    from scorers.refstats import reference_stats
    from stream.drift.stats import accumulate, build_layout

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2000)
    p.add_argument("--sweep-mb", type=int, default=32, help="cold: MB swept before each call")
    a = p.parse_args()
    names = [f"f{j}" for j in range(FEATURES)]
    rng = np.random.default_rng(0)
    X_train, _ = _synthetic(50_000, 2)
    ref = reference_stats(X_train, names, rng.beta(0.5, 5, 50_000),
                          categorical=names[:CATEGORICAL])
    lay = build_layout([(n, ref["features"][n]) for n in names] + [("score", ref["score"])])
    X, _ = _synthetic(a.batch, 3)
    s = rng.beta(0.5, 5, a.batch)
    counts = np.zeros(lay.total_bins, dtype=np.int64)
    accumulate(lay, X, counts, scores=s)  # compile / load the cache
    sweep = np.ones(a.sweep_mb * 2**20 // 8)
    cpu = time.thread_time_ns
    for mode in ("warm", "cold"):
        t = []
        for _ in range(a.repeats if mode == "warm" else max(a.repeats // 10, 50)):
            if mode == "cold":
                sweep += 1.0  # evict the kernel's data from the caches
            c = cpu()
            accumulate(lay, X, counts, scores=s)
            t.append((cpu() - c) / 1e3)
        print(f"{mode}: min {min(t):.1f} us, median {float(np.median(t)):.1f} us "
              f"({len(t)} calls)")
    print(f"counts checksum {int((counts * np.arange(counts.size)).sum())}")


if __name__ == "__main__":
    main()
