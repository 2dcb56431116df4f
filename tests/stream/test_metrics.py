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


def test_lag_series_of_revoked_partitions_go_away():
    from stream.metrics import WorkerMetrics

    m = WorkerMetrics("fraud")
    m.set_lag({("in", 0): 5, ("in", 1): 7, ("in", 2): 0})

    def lag(p):
        return m.registry.get_sample_value("streamscore_consumer_lag",
                                           {"pipeline": "fraud", "topic": "in", "partition": p})

    assert (lag("0"), lag("1"), lag("2")) == (5.0, 7.0, 0.0)
    m.forget_partitions([("in", 1)])  # revoked: another worker reports it now
    assert lag("1") is None and lag("0") == 5.0
    m.set_lag({("in", 0): 3})  # partition 2 is no longer assigned either
    assert (lag("0"), lag("1"), lag("2")) == (3.0, None, None)
    m.forget_partitions([("in", 9)])  # never reported: nothing to remove, no error


def test_batch_ack_histogram_and_drift_stage():
    from types import SimpleNamespace

    import numpy as np

    from stream.metrics import WorkerMetrics

    m = WorkerMetrics("fraud")
    res = SimpleNamespace(n_in=3, outcomes={"approve": 3}, dead_letter_reasons={},
                          degraded_reasons={}, budget_misses=0, online_status="ok",
                          stage_s={"decode": 0.001, "drift": 0.0002}, e2e_s=np.zeros(3))
    m.observe_batch(res)
    m.observe_ack(0.004)
    got = m.registry.get_sample_value
    assert got("streamscore_batch_ack_seconds_count", {"pipeline": "fraud"}) == 1
    assert got("streamscore_batch_ack_seconds_bucket", {"pipeline": "fraud", "le": "0.005"}) == 1
    assert got("streamscore_stage_latency_seconds_count",
               {"pipeline": "fraud", "stage": "drift"}) == 1


def test_process_metrics_are_scraped_from_the_worker_endpoint():
    import urllib.request

    from stream.metrics import HealthServer, WorkerMetrics

    server = HealthServer(WorkerMetrics("fraud"), port=0).start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
    finally:
        server.stop()
    samples = {line.split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_start_time_seconds"):
        assert name in samples, f"{name} not scraped"


def test_liveness_outlasts_every_bounded_wait_and_acks_count_as_progress():
    import time

    from stream.kafka.clients import ACK_TIMEOUT_S
    from stream.metrics import STUCK_AFTER_S, WorkerMetrics

    # A loop waiting on acks for up to ACK_TIMEOUT_S then stops by itself: liveness must
    # not kill it first.
    assert STUCK_AFTER_S > ACK_TIMEOUT_S
    m = WorkerMetrics("p")
    m.heartbeat = time.monotonic() - ACK_TIMEOUT_S  # a full ack wait without a loop turn
    assert m.healthy()
    m.heartbeat = time.monotonic() - STUCK_AFTER_S - 1  # nothing progressed at all
    assert not m.healthy()


def test_health_server_bounds_its_threads_and_drops_silent_clients():
    import socket
    import threading
    import time
    import urllib.request

    from stream.metrics import HTTP_MAX_CONCURRENT, HTTP_TIMEOUT_S, HealthServer, WorkerMetrics

    server = HealthServer(WorkerMetrics("p"), "127.0.0.1", 0).start()
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    try:
        time.sleep(0.5)
        # 40 clients that send nothing: at most HTTP_MAX_CONCURRENT threads serve them.
        assert threading.active_count() - before <= HTTP_MAX_CONCURRENT
        time.sleep(HTTP_TIMEOUT_S + 1.0)  # their reads time out, the threads end
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
        assert threading.active_count() - before <= 1
    finally:
        for s in idle:
            s.close()
        server.stop()
