"""The benchmarked scorer path gives LightGBM's answers (the benchmark itself is not a test)."""

from __future__ import annotations

import argparse
from pathlib import Path

import lightgbm as lgb
import numpy as np

from benchmarks import bench_scorer


def test_benchmark_options_and_tiny_run(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    bench_scorer.add_arguments(parser)
    args = parser.parse_args(["--quick", "--out", str(tmp_path)])
    assert args.quick and args.out == str(tmp_path)

    X, y = bench_scorer.synthetic("fraud", 600)
    assert X.shape == (600, 40) and 0.02 < np.isnan(X).mean() < 0.08
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1},
                        lgb.Dataset(X, y, categorical_feature=[0, 1, 2]), 5)
    path = tmp_path / "fraud_like.txt"
    booster.save_model(str(path))
    # bench_model asserts the compiled model equals Booster.predict before timing.
    result = bench_scorer.bench_model("fraud", path, seconds=0.01, batches=(1, 16))
    assert set(result["rows_per_s"]) >= {"lightgbm", "streamscore", "streamscore-general"}
    assert result["ratio"]["lightgbm"]["16"] == 1.0
    assert result["kernel"] == "quickscorer"
