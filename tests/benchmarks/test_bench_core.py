"""``streamscore bench core`` on a tiny workspace: the timed path decides every event.

The benchmark times ``BatchCore.process`` of the real pipeline (Feast rows in the real
Redis, the trained model); here it runs briefly and the same stages' records are
checked against the ``Decision`` schema, so the numbers are about a correct core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytestmark = pytest.mark.integration


def test_core_bench_times_a_correct_core(workspace: Any, redis_url: str) -> None:
    import stream.core.pipeline as pipeline_mod
    from benchmarks.bench_core import _stages, _table, measure
    from benchmarks.loadgen import EventFactory
    from schemas.registry import decoder_for

    out = measure("fraud", workspace, redis_url, batches=[64, 512], events=512, repeats=1,
                  against=pipeline_mod.__file__)
    assert pipeline_mod.time is time  # the CPU clock stand-in is removed afterwards
    eb_good = out["good"]
    for side in (out["batches"], out["against"]["batches"]):
        for row in side.values():
            assert row["decisions"] == eb_good and row["online_faults"] == 0
            assert 0 < row["core_us"] <= row["cpu_us"]
            assert row["read_us"] > 0 and row["predict_us"] > 0
    assert "fraud*" in _table({"pipelines": [out]})

    # The same stages and events: every good event gives a record in the schema's own
    # encoding, every malformed one a dead letter.
    st = _stages("fraud", workspace, redis_url)
    try:
        eb = EventFactory.from_data_dir("fraud", workspace.data_dir, seed=7).make(512, "t-")
        res = st.core.process(eb.payloads, keys=eb.keys)
    finally:
        st.close()
    assert len(res.decisions) == eb.good and len(res.dead_letters) == eb.malformed
    decode = decoder_for("decision").decode
    for key, value in res.decisions:
        record = decode(value)
        assert msgspec.json.encode(record) == value and key == record.key.encode()


def test_core_bench_cli_writes_its_report(workspace: Any, redis_url: str,
                                          tmp_path: Path) -> None:
    from benchmarks import bench_core

    parser = argparse.ArgumentParser()
    bench_core.add_arguments(parser)
    args = parser.parse_args(["--pipeline", "fraud", "--batches", "256", "--events", "256",
                              "--repeats", "1", "--size", "tiny", "--redis-url", redis_url,
                              "--workspace", str(workspace.root.parent),
                              "--out", str(tmp_path)])
    # The workspace root is <parent>/fraud-tiny for the CLI: point it at the fixture's.
    target = workspace.root.parent / "fraud-tiny"
    if not target.exists():
        target.symlink_to(workspace.root)
    assert bench_core.run(args) == 0
    report = json.loads((tmp_path / "core.json").read_text())
    assert report["pipelines"][0]["batches"]["256"]["decisions"] > 0
