"""Redis-side cost of the streaming velocity update (part of ``streamscore bench features``).

Redis is single-threaded and shared with the online reads (20 ms timeout in
``pipelines/fraud.yaml``), so what the update costs *inside Redis* matters more than its
client CPU: per card, the Redis CPU time and the time its script holds Redis, and per
script the longest stall. Measured on a private ``redis-server`` (started here when one is
on PATH; else the given Redis, marked ``shared`` in the report) so that ``INFO cpu``,
``INFO commandstats`` and ``SLOWLOG`` (threshold 0: every script's duration) count only
this run; without a ``redis-server`` binary this part is skipped (it resets statistics
and the slow log, which must not happen on a shared Redis).

Workload: a Zipf-skewed card stream (20,000 cards, exponent 1.1: a few cards get events in
every minute, so their state holds all 60 one-minute buckets of the 1 h window), warmed up
with 90 minutes of history, then measured in worker-sized batches of 4,096 events in time
order:

* ``live``     - events spread over 60 s of event time (a batch spans ~2.5 s: a busy card's
  events mostly land in its newest bucket);
* ``catch-up`` - over 600 s (a batch spans ~25 s, as in a backlog drain: buckets advance).

Meanwhile a separate process sends a GET every ~1 ms, as an online read would, and counts
replies slower than 20 ms (the fraud pipeline's read timeout): ``probe_*``.

``streamscore bench features --velocity-only`` runs this part alone; ``--velocity-push
FILE`` measures another version of ``features/push.py`` (e.g. ``git show
e6ffbcf:features/push.py > /tmp/push_e6ffbcf.py``) with the same harness, for before/after.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["SCENARIOS", "measure"]

SCENARIOS = {"live": 60.0, "catch-up": 600.0}  # name -> event-time span of the measured part
BATCH = 4096


def _stream(rng: Any, card_ids: Any, weights: Any, n: int, t0: float, span: float) -> Any:
    import numpy as np

    cards = card_ids[rng.choice(len(card_ids), n, p=weights)]
    amounts = np.round(rng.gamma(2.0, 30.0, n), 2)
    times = np.sort(t0 + rng.random(n) * span)
    return cards, amounts, times


# What an online read sees meanwhile: another process sends a GET every ~1 ms and times
# each reply (a separate process: a thread would wait on this process's GIL, not Redis).
_PROBE = r"""
import json, select, socket, sys, time
conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
lat = []
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0.001)[0]:
    t0 = time.perf_counter()
    conn.sendall(b"*2\r\n$3\r\nGET\r\n$5\r\nprobe\r\n")
    conn.recv(64)
    lat.append(time.perf_counter() - t0)
lat.sort()
print(json.dumps({
    "probe_reads": len(lat),
    "probe_p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1e3 if lat else None,
    "probe_max_ms": lat[-1] * 1e3 if lat else None,
    "probe_over_20ms": sum(x > 0.020 for x in lat),
}))
"""


def _start_probe(url: str) -> Any:
    import subprocess

    port = url.rsplit(":", 1)[1].split("/")[0]
    probe = subprocess.Popen(
        [sys.executable, "-c", _PROBE, port],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert probe.stdout is not None
    probe.stdout.readline()  # "ready": connected
    return probe


def _stop_probe(probe: Any) -> dict[str, Any]:
    import json

    out, _ = probe.communicate("stop\n", timeout=30)
    return dict(json.loads(out))


def _updater_class(push_file: str | None) -> Any:
    """``VelocityUpdater`` of this tree, or of another version of ``features/push.py``."""
    if push_file is None:
        from features.push import VelocityUpdater

        return VelocityUpdater
    import importlib.util

    spec = importlib.util.spec_from_file_location("velocity_push_under_test", push_file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench features: cannot load {push_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.VelocityUpdater


def measure(repo: Path, quick: bool, push_file: str | None = None) -> dict[str, Any]:
    """Per scenario: Redis CPU and script time per card, script p50/p99/max, client CPU."""
    import numpy as np
    import redis

    from features import layout
    from features.repo import open_store
    from schemas.errors import InfrastructureError
    from stream.dev.embedded import start_redis_server

    try:
        server = start_redis_server()
    except InfrastructureError as exc:
        return {"skipped": f"no private redis-server to measure on: {exc}"}
    target = server.url
    VelocityUpdater = _updater_class(push_file)
    out: dict[str, Any] = {"redis": "private redis-server", "push": push_file or "this tree"}
    project = str(open_store(repo, target).config.project).encode()
    try:
        client = redis.Redis.from_url(target)
        rng = np.random.default_rng(1)
        n_cards = 20000
        weights = 1.0 / np.arange(1, n_cards + 1) ** 1.1
        weights /= weights.sum()
        card_ids = rng.choice(10**9, n_cards, replace=False).astype(np.int64)
        warm, measured = (100_000, 50_000) if quick else (200_000, 100_000)
        for name, span in SCENARIOS.items():
            client.flushdb()  # the private server: each scenario from the same start
            updater = VelocityUpdater(repo, redis_url=target, timeout_ms=10_000)
            now = time.time()
            c, a, t = _stream(rng, card_ids, weights, warm, now - 5400 - span, 5400)
            for lo in range(0, warm, BATCH):
                updater.update(c[lo : lo + BATCH], a[lo : lo + BATCH], t[lo : lo + BATCH])
            c, a, t = _stream(rng, card_ids, weights, measured, now - span, span)
            client.config_set("slowlog-log-slower-than", 0)
            client.config_set("slowlog-max-len", 100_000)
            client.slowlog_reset()
            client.config_resetstat()  # the probe's GETs land in commandstats too: fine
            probe = _start_probe(target)
            cpu0 = client.info("cpu")
            cards = failed = 0
            w0, th0 = time.perf_counter(), time.thread_time()
            for lo in range(0, measured, BATCH):
                done = updater.update(c[lo : lo + BATCH], a[lo : lo + BATCH], t[lo : lo + BATCH])
                cards += done.cards
                failed += done.status != "ok"
            wall, thread = time.perf_counter() - w0, time.thread_time() - th0
            cpu1 = client.info("cpu")
            reads = _stop_probe(probe)
            stats = client.info("commandstats")
            log = client.slowlog_get(100_000)
            client.config_set("slowlog-log-slower-than", 10_000)
            scripts = np.array(
                [e["duration"] for e in log if e["command"][:7].upper() == b"EVALSHA"]
            )
            used = sum(cpu1[k] - cpu0[k] for k in ("used_cpu_user", "used_cpu_sys"))
            evalsha = stats.get("cmdstat_evalsha", {"usec": 0, "calls": 0})
            busiest = layout.entity_key(["card_id"], [layout.KIND_INT64], [int(card_ids[0])])
            state = client.strlen(b"ssvel:" + busiest + project)
            out[name] = {
                "events": measured,
                "card_updates": cards,
                "failed_batches": failed,
                "scripts": int(evalsha["calls"]),
                "cards_per_script": updater._chunk,
                "redis_cpu_us_per_card": used * 1e6 / max(cards, 1),
                "script_us_per_card": evalsha["usec"] / max(cards, 1),
                "script_p50_ms": float(np.median(scripts)) / 1e3 if len(scripts) else None,
                "script_p99_ms": float(np.percentile(scripts, 99)) / 1e3 if len(scripts) else None,
                "script_max_ms": float(scripts.max()) / 1e3 if len(scripts) else None,
                "client_cpu_us_per_event": thread * 1e6 / measured,
                "wall_s": wall,
                "busiest_state_bytes": state,
                **reads,
                "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            }
            updater.close()
        client.close()
    finally:
        if server is not None:
            server.stop()
    return out
