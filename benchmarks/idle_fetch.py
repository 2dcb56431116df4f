"""Idle-fetch backoff benchmark: consumer and broker CPU, and latency, at low input rates.

One ``stream.kafka.clients.BatchConsumer`` (the worker's consumer) in its own group on a fresh
4-partition topic; a producer thread sends timestamped records at a fixed rate (0 = idle);
for each idle backoff the consumer reads for ``--seconds`` and the run reports its own
process CPU, the broker process's CPU (``/proc``), the fetch latency (produce call ->
returned by ``consume``) and whether every record arrived once, in order per partition.
Backoffs and rates are run alternately in the same time window.

    python -m benchmarks.idle_fetch --backoff-ms 0,5 --rates 0,100,1000 --seconds 6

The bootstrap and the broker pid come from ``streamscore dev up`` (``$STREAMSCORE_HOME``)
unless given; ``--broker tansu|noida`` starts a broker of that kind for the run instead.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "run_one"]


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def run_one(bootstrap: str, broker_pid: int | None, backoff_ms: float, rate: float,
            seconds: float, batch_timeout_ms: float = 5.0) -> dict[str, Any]:
    """One consumer for ``seconds`` at ``rate`` records/s; CPU, latency, order."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from stream.kafka.clients import BatchConsumer

    topic = "idlebench-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        fut.result()
    bc = BatchConsumer(bootstrap, "g-" + topic, [topic], idle_backoff_s=backoff_ms / 1000)
    deadline = time.monotonic() + 20
    while not bc.assignment and time.monotonic() < deadline:
        bc.consume(64, 0.05)
    for _ in range(20):  # settle: the first fetches after the assignment
        bc.consume(64, batch_timeout_ms / 1000)
    sent = [0]
    halt = threading.Event()

    def produce() -> None:
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        nxt = time.time()
        i = 0
        while not halt.is_set():
            nxt += 1 / rate
            d = nxt - time.time()
            if d > 0:
                time.sleep(d)
            p.produce(topic, f"{i} {time.time()}".encode(), partition=i % 4)
            p.poll(0)
            i += 1
        p.flush(10)
        sent[0] = i

    lat: list[float] = []
    last = {p: -1 for p in range(4)}
    seen = 0
    disorder = 0
    th = threading.Thread(target=produce, daemon=True) if rate > 0 else None
    c0, b0, t0 = time.process_time(), _cpu_s(broker_pid) if broker_pid else 0.0, time.time()
    if th is not None:
        th.start()

    def take(msgs: list[Any]) -> None:
        nonlocal seen, disorder
        now = time.time()
        for m in msgs:
            i, ts = m.value().split()
            part = m.partition()
            if int(i) <= last[part]:
                disorder += 1
            last[part] = int(i)
            seen += 1
            lat.append(now - float(ts))

    while time.time() - t0 < seconds:
        take(bc.consume(256, batch_timeout_ms / 1000))
    dt = time.time() - t0
    cpu = time.process_time() - c0  # includes the producer thread (small at these rates)
    bcpu = _cpu_s(broker_pid) - b0 if broker_pid else float("nan")
    halt.set()
    if th is not None:
        th.join()
        end = time.time() + 10
        while seen < sent[0] and time.time() < end:
            take(bc.consume(256, 0.05))
    pauses = bc.idle.pauses
    turned_off = backoff_ms > 0 and bc.idle.backoff_s == 0  # the broker holds empty fetches
    bc.close()
    a = np.array(lat) * 1e3 if lat else np.array([np.nan])
    return {"backoff_ms": backoff_ms, "rate": rate, "consumer_cpu": cpu / dt,
            "broker_cpu": bcpu / dt, "sent": sent[0], "received": seen,
            "disorder": disorder, "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(np.max(a)),
            "idle_pauses": pauses, "turned_off": turned_off, "load": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", default="")
    ap.add_argument("--broker", choices=("tansu", "noida"), default=None,
                    help="start this embedded broker for the run (default: dev up's)")
    ap.add_argument("--broker-pid", type=int, default=0)
    ap.add_argument("--backoff-ms", default="0,5")
    ap.add_argument("--rates", default="0,100,1000")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    bootstrap, pid = args.bootstrap, args.broker_pid or None
    started = None
    if args.broker:
        from stream.dev.embedded import start_broker

        started = start_broker(args.broker)
        bootstrap, pid = started.address, started.pid
    elif not bootstrap:
        home = Path(os.environ.get("STREAMSCORE_HOME", ".streamscore"))
        dev = json.loads((home / "dev.json").read_text())
        bootstrap = dev["bootstrap_servers"]
        pid = pid or int(dev["processes"][0]["pid"])
    print("backoff_ms rate consumer_cpu% broker_cpu% sent received disorder "
          "p50_ms p99_ms max_ms idle_pauses turned_off load", flush=True)
    try:
        for _ in range(args.repeats):
            for rate in [float(r) for r in args.rates.split(",")]:
                for b in [float(x) for x in args.backoff_ms.split(",")]:
                    r = run_one(bootstrap, pid, b, rate, args.seconds)
                    print(f"{r['backoff_ms']:g} {r['rate']:g} {100 * r['consumer_cpu']:.0f} "
                          f"{100 * r['broker_cpu']:.0f} {r['sent']} {r['received']} "
                          f"{r['disorder']} {r['p50_ms']:.1f} {r['p99_ms']:.1f} "
                          f"{r['max_ms']:.1f} {r['idle_pauses']} {r['turned_off']:d} "
                          f"{r['load']:.1f}", flush=True)
    finally:
        if started is not None:
            started.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
