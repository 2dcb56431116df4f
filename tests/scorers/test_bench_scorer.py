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


def test_shape_sweep_models_load_in_lightgbm_and_match(tmp_path: Path) -> None:
    """The sweep's generated models are LightGBM's format, and the compiled scorer equals
    ``Booster.predict`` on them (the sweep asserts it before timing)."""
    from benchmarks import scorer_sweep

    shapes = [(15, 5, 4, 0.4, 0.2), (130, 6, 3, 0.3, 0.3), (1, 3, 2, 0.0, 0.0)]
    text, depths = scorer_sweep.model_text(shapes[1])
    booster = lgb.Booster(model_str=text)
    assert booster.num_trees() == 3 and booster.num_feature() == 6
    assert all(d.size == 130 for d in depths) and max(d.max() for d in depths) > 7
    results = scorer_sweep.sweep(shapes, seconds=0.01)
    assert [r["kernel"] for r in results] == ["quickscorer", "blockwalk", "quickscorer"]
    assert all(r["ratio_1"] > 0 and r["ratio_512"] > 0 for r in results)
    scorer_sweep.plot(results, tmp_path / "sweep.png", (1.0, 1.0, 1.0))
    assert (tmp_path / "sweep.png").stat().st_size > 0
