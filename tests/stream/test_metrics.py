"""Worker metrics stay per worker even after Feast has switched prometheus_client's mode."""

from __future__ import annotations

import subprocess
import sys


def test_feast_import_does_not_make_worker_metrics_shared():
    # feast.metrics sets PROMETHEUS_MULTIPROCESS_DIR at import; in a fresh interpreter
    # (the import order matters) two workers' counters must still be independent.
    code = (
        "import feast.metrics\n"
        "from stream.metrics import WorkerMetrics\n"
        "a = WorkerMetrics('fraud'); a.events.labels('fraud').inc(700)\n"
        "b = WorkerMetrics('fraud'); b.events.labels('fraud').inc(5)\n"
        "print(b.registry.get_sample_value('streamscore_events_total', {'pipeline': 'fraud'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "5.0", out.stdout + out.stderr
