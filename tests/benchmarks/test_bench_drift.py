"""``streamscore bench drift --worker-sequence``: the drift update timed after the worker's
own batch core, on a real workspace (Feast rows in the real Redis, a trained model)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


def test_worker_sequence_times_drift_after_the_batch_core(workspace: Any) -> None:
    from benchmarks.bench_drift import worker_sequence

    r = worker_sequence(batch=256, batches=4, repeats=2, ws=workspace)
    assert r["batches"] == 4 and r["batch"] == 256 and r["features"] > 0
    # 2,048 events with the pipeline's drift settings (a record per 1,000 events):
    # records closed in the timed pass, the update's time includes them
    assert r["records"] >= 1
    assert r["score_cpu_us"] > 0 and r["drift_cpu_us"] > 0
    assert r["drift_over_score"] == pytest.approx(r["drift_cpu_us"] / r["score_cpu_us"])
    assert r["drift_settings"]["window_events"] == 5000
