"""Faults: the circuit breaker alone, then a real redis-server that hangs, dies and returns."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from features.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_once() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=3, reset_timeout_s=2.0, clock=clock)
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open" and not b.allow() and b.opened_count == 1
    clock.now = 1.9
    assert not b.allow()
    clock.now = 2.0
    assert b.allow() and b.state == "half_open"
    assert not b.allow()  # one probe at a time
    b.record_failure()  # the probe failed: open again, for another full period
    assert b.state == "open" and b.opened_count == 2
    clock.now = 3.9
    assert not b.allow()
    clock.now = 4.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow()


def test_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(failure_threshold=2, reset_timeout_s=1.0, clock=Clock())
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)


def test_a_lost_probe_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, reset_timeout_s=1.0, clock=clock)
    b.record_failure()
    clock.now = 1.0
    assert b.allow()  # probe sent, never reported back
    clock.now = 2.0
    assert b.allow()


# ---- a throwaway redis-server of this test's own (never the shared one) ------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayRedis:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not on PATH")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("throwaway redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def pause(self, paused: bool) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)


@pytest.fixture
def throwaway() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(_free_port())
    server.start()
    yield server
    server.stop()


def _fill(repo: Any, url: str) -> list[str]:
    """Write three merchants into the throwaway Redis through Feast itself."""
    from datetime import UTC, datetime

    import pandas as pd

    from features.repo import open_store

    merchants = ["ma", "mb", "mc"]
    open_store(repo.path, url).write_to_online_store(
        "merchant_risk",
        pd.DataFrame(
            {
                "merchant_id": merchants,
                "fraud_rate": [0.1, 0.2, 0.3],
                "category": ["fuel", "games", "travel"],
                "volume": [1, 2, 3],
                "event_timestamp": [datetime.now(UTC)] * 3,
            }
        ),
    )
    return merchants


@pytest.mark.integration
def test_redis_hang_death_and_recovery(feast_repo: Any, throwaway: ThrowawayRedis) -> None:
    from features.online import OnlineReader
    from features.push import VelocityUpdater

    merchants = _fill(feast_repo, throwaway.url)
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=0.3)
    refs = ["merchant_risk:fraud_rate", "merchant_risk:volume"]
    reader = OnlineReader(feast_repo.path, refs, throwaway.url, timeout_ms=250, breaker=breaker)
    entities = {"merchant_id": [*merchants, "unknown"]}
    res = reader.read(entities)
    assert res.ok and res.values[:3].tolist() == [[0.1, 1.0], [0.2, 2.0], [0.3, 3.0]]
    assert np.isnan(res.values[3]).all() and res.missing[3, 0]  # unknown entity: NaN + flag

    # a hung server: the read gives up after the timeout, with NaN and a reason
    throwaway.pause(True)
    try:
        t0 = time.perf_counter()
        res = reader.read(entities)
        elapsed = time.perf_counter() - t0
    finally:
        throwaway.pause(False)
    assert res.status == "timeout" and np.isnan(res.values).all() and not res.present.any()
    assert 0.2 < elapsed < 1.5, elapsed  # bounded by timeout_ms, not by the hang
    assert reader.read(entities).ok  # a fresh connection works again; breaker closed again

    # a dead server: connection refused -> unavailable, then the breaker opens
    throwaway.stop()
    first = reader.read(entities)
    second = reader.read(entities)
    assert first.status == second.status == "unavailable" and "Redis unavailable" in str(
        first.error
    )
    assert breaker.state == "open"
    t0 = time.perf_counter()
    skipped = reader.read(entities)
    assert skipped.status == "circuit_open" and np.isnan(skipped.values).all()
    assert time.perf_counter() - t0 < 0.05  # no attempt to reach Redis at all
    updater = VelocityUpdater(feast_repo.path, redis_url=throwaway.url, breaker=CircuitBreaker())
    lost = updater.update([1, 2], [3.0, 4.0], [time.time()] * 2)
    assert lost.status == "unavailable" and lost.rows == 0

    # back up: after the reset period one probe goes through and closes the breaker
    throwaway.start()
    _fill(feast_repo, throwaway.url)
    time.sleep(0.35)
    res = reader.read(entities)
    assert res.ok and breaker.state == "closed" and res.values[0].tolist() == [0.1, 1.0]
    assert updater.update([1], [3.0], [time.time()]).status == "ok"

    # a restart between two batches: the reader's open connection is stale, and the
    # read retries once on a fresh one instead of failing the batch
    throwaway.stop()
    throwaway.start()
    _fill(feast_repo, throwaway.url)
    res = reader.read(entities)
    assert res.ok and res.values[2].tolist() == [0.3, 3.0] and breaker.state == "closed"
    reader.close()
    updater.close()
