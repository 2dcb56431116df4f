"""Drain ceiling of the Kafka I/O alone: the worker's loop with a null scoring core.

Fills a fresh 4-partition input topic with N ~200-byte events, then drains it the way
``stream.worker`` does, without decoding, features or scoring: ``BatchConsumer.consume``
(up to ``--batch``) -> the worker's per-message unpacking -> one ~900-byte output
record per input through the worker's commit owner (``stream.kafka.commit``: produce
with the batch's delivery callback -> commit of the acknowledged prefix). The output records
are decision-shaped JSON with random values (``decision_pool``: as compressible as real
ones at most, so compression is not flattered). Reports events/s
(first message consumed -> last batch acknowledged), the process's CPU per event (all
threads, librdkafka's included) and the broker's CPU over the same span, per producer
setting; settings are run alternately, each with its own topics and group.

    python -m benchmarks.null_drain --events 100000 --repeats 3 \\
        --producer '{}' --producer '{"compression.type": "lz4"}'

Bootstrap and broker pid from ``streamscore dev up`` (``$STREAMSCORE_HOME``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["decision_pool", "drain_once", "fill", "main"]


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def decision_pool(n: int = 4096, seed: int = 7) -> list[bytes]:
    """``n`` distinct ~900-byte decision records (the worker's field names, random values)."""
    import msgspec
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        r = rng.random(24)
        doc = {
            "event_id": f"ev-{rng.integers(1 << 40):x}", "pipeline": "fraud",
            "key": f"card-{rng.integers(100000)}", "outcome": "approve",
            "score": float(r[0]), "model_name": "fraud", "model_version": "1",
            "model_sha256": "4fcd7fff67aad7bb" + f"{rng.integers(1 << 62):016x}" * 3,
            "reasons": [{"feature": f"f{int(r[1] * 40)}", "contribution": float(r[2])}],
            "degraded": bool(r[3] < 0.1), "degraded_reasons": [],
            "missing_features": int(r[4] * 3),
            "feature_age_s": {f"view_{j}": float(r[5 + j] * 86400) for j in range(4)},
            "latency_ms": {s: float(r[9 + k]) for k, s in enumerate(
                ("decode", "features", "score", "policy", "encode"))},
            "e2e_ms": float(r[14] * 100), "event_time": 1.79e9 + float(r[15]) * 1e5,
            "decided_at": 1.79e9 + float(r[16]) * 1e5, "worker_id": "host-1234",
            "source_topic": "fraud.transactions", "source_partition": int(r[17] * 4),
            "source_offset": int(rng.integers(1 << 30)), "schema_version": 1,
        }
        out.append(msgspec.json.encode(doc))
    return out


def fill(bootstrap: str, topic: str, events: int, size: int = 200) -> None:
    """``events`` records of ``size`` bytes, keyed like card ids, on 4 partitions."""
    from confluent_kafka import Producer

    from stream.kafka.admin import ensure_topics

    ensure_topics(bootstrap, [topic], partitions=4)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                  "batch.num.messages": 10000, "compression.type": "lz4"})
    pad = b"x" * max(size - 40, 0)
    for i in range(events):
        while True:
            try:
                p.produce(topic, b'{"event_id":"%d","p":"%s"}' % (i, pad), f"c{i % 5000}".encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(60)


def drain_once(bootstrap: str, topic_in: str, producer_settings: dict[str, Any], *,
               batch: int = 4096, broker_pid: int | None = None,
               idle_exit_s: float = 2.0, expect: int = 0) -> dict[str, Any]:
    """Drain ``topic_in`` with the worker's Kafka I/O and a null core."""
    from stream.kafka.admin import ensure_topics
    from stream.kafka.clients import AckedProducer, BatchConsumer, offsets_of
    from stream.kafka.commit import CommitOwner
    from stream.kafka.inflight import InFlight

    topic_out = topic_in + "-out-" + uuid.uuid4().hex[:6]
    ensure_topics(bootstrap, [topic_out], partitions=4)
    pool = decision_pool()
    npool = len(pool)
    sent = 0
    events = 0
    first: tuple[float, float, float] | None = None
    last_ack = (0.0, 0.0, 0.0)
    last_input = time.monotonic()

    def acked(_latencies: list[float]) -> None:
        nonlocal last_ack
        last_ack = (time.perf_counter(), time.process_time(),
                    _cpu_s(broker_pid) if broker_pid else 0.0)

    holder: list[CommitOwner] = []  # the consumer's revoke hook needs the owner made below
    consumer = BatchConsumer(bootstrap, "null-" + uuid.uuid4().hex[:8], [topic_in],
                             on_leaving=lambda gone, lost: holder[0].revoke(gone, lost))
    producer = AckedProducer(bootstrap, producer_settings)
    window = InFlight(16, max(8 * batch, 8192))
    owner = CommitOwner(producer, consumer, window=window, on_acked=acked)
    holder.append(owner)
    try:
        while True:
            msgs = consumer.consume(batch, 0.005)
            owner.settle()
            if not msgs:
                if time.monotonic() - last_input > idle_exit_s or (expect and events >= expect):
                    break
                continue
            last_input = time.monotonic()
            if first is None:
                first = (time.perf_counter(), time.process_time(),
                         _cpu_s(broker_pid) if broker_pid else 0.0)
            # The worker's unpacking (stream.worker.run), then one record per input.
            payloads = [m.value() for m in msgs]
            keys = [m.key() for m in msgs]
            sources = [(topic_in, m.partition(), m.offset()) for m in msgs]
            _stamps = [m.timestamp()[1] / 1000.0 for m in msgs]
            assert len(payloads) == len(keys)
            records = [(k, pool[(sent + i) % npool]) for i, k in enumerate(keys)]
            sent += len(records)
            owner.commit_batch([(topic_out, records)], offsets_of(sources), time.perf_counter())
            events += len(msgs)
    finally:
        owner.close()  # every batch acknowledged and committed, then both clients closed
    err = window.error()
    if err:
        raise RuntimeError(err)
    if first is None:
        raise RuntimeError("nothing consumed")
    wall = last_ack[0] - first[0]
    return {"events": events, "rate": events / wall if wall > 0 else 0.0,
            "us_cpu_per_event": 1e6 * (last_ack[1] - first[1]) / max(events, 1),
            "broker_cores": (last_ack[2] - first[2]) / wall if wall > 0 and broker_pid else
            float("nan"), "load": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--producer", action="append", default=None, metavar="JSON",
                    help="producer settings to compare (repeat; default: '{}' only)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--settle-s", type=float, default=10.0,
                    help="pause after filling, and after draining before the broker's CPU "
                    "is read again (noida keeps working for seconds after writes)")
    args = ap.parse_args(argv)
    home = Path(os.environ.get("STREAMSCORE_HOME", ".streamscore"))
    dev = json.loads((home / "dev.json").read_text())
    bootstrap, pid = dev["bootstrap_servers"], int(dev["processes"][0]["pid"])
    variants = [json.loads(v) for v in (args.producer or ["{}"])]
    print("run settings events events/s us_cpu/event broker_cores_while_draining "
          "broker_us/event_incl_tail load", flush=True)
    for rep in range(args.repeats):
        for v in variants:
            topic = "nulldrain-" + uuid.uuid4().hex[:8]
            fill(bootstrap, topic, args.events)
            time.sleep(args.settle_s)
            b0 = _cpu_s(pid)
            r = drain_once(bootstrap, topic, v, batch=args.batch, broker_pid=pid,
                           expect=args.events)
            time.sleep(args.settle_s)  # the broker's work after the drain counts too
            tail_us = 1e6 * (_cpu_s(pid) - b0) / max(r["events"], 1)
            print(f"{rep} {json.dumps(v, separators=(',', ':'))} {r['events']} "
                  f"{r['rate']:.0f} {r['us_cpu_per_event']:.2f} {r['broker_cores']:.2f} "
                  f"{tail_us:.1f} {r['load']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
