"""``streamscore demo``: the foundation smoke run on embedded infrastructure.

Starts the embedded broker and finds (or starts) Redis, produces events to a fresh
topic, consumes them in a consumer group with offsets committed after processing,
writes and reads per-entity state in Redis, prints what happened and stops everything
it started. (The full scoring pipeline demo replaces this once the worker lands.)
"""

from __future__ import annotations

import argparse
import time
import uuid

import msgspec
import numpy as np

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Run the smoke demo; returns 0 when every produced event was consumed."""
    import redis
    from confluent_kafka import Consumer, Producer

    from stream.admin import ensure_topics
    from stream.embedded import (
        client_settings_for,
        default_broker_kind,
        resolve_redis,
        start_broker,
    )

    kind = args.broker or default_broker_kind()
    n = max(1, min(int(args.events), 50_000))
    print(f"starting embedded Kafka broker ({kind}) ...")
    broker = start_broker(kind)
    redis_server = resolve_redis()
    try:
        print(f"  kafka at {broker.address}, redis at {redis_server.url} ({redis_server.origin})")
        topic = f"demo-{args.pipeline}-{uuid.uuid4().hex[:6]}"
        ensure_topics(broker.address, [topic], partitions=4)
        rng = np.random.default_rng(7)
        cards = rng.integers(1, 5_000, size=n)
        amounts = np.round(rng.lognormal(3.5, 1.0, size=n), 2)
        producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 2})
        acked = 0

        def on_delivery(err: object, msg: object) -> None:
            nonlocal acked
            acked += int(err is None)

        encoder = msgspec.json.Encoder()
        t0 = time.perf_counter()
        for i in range(n):
            doc = {"event_id": f"e{i}", "card_id": int(cards[i]), "amount": float(amounts[i]),
                   "sent": time.time()}
            producer.produce(topic, encoder.encode(doc), key=str(cards[i]).encode(),
                             on_delivery=on_delivery)
            producer.poll(0)
        producer.flush(30)
        del producer  # its connections close before the broker stops
        produce_s = time.perf_counter() - t0
        print(f"produced {n} events to {topic} (4 partitions): {acked} acked "
              f"in {produce_s:.2f} s ({n / produce_s:,.0f}/s)")

        consumer = Consumer({
            "bootstrap.servers": broker.address, "group.id": f"demo-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "enable.auto.offset.store": False, **client_settings_for(kind),
        })
        consumer.subscribe([topic])
        client = redis.Redis.from_url(redis_server.url)
        prefix = f"streamscore:demo:{uuid.uuid4().hex[:6]}:"
        decoder = msgspec.json.Decoder()
        seen = 0
        lat: list[float] = []
        per_part: dict[int, int] = {}
        deadline = time.monotonic() + 60
        t0 = time.perf_counter()
        while seen < n and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=500, timeout=0.5)
            pipe = client.pipeline(transaction=False)
            now = time.time()
            for msg in batch:
                if msg.error():
                    continue
                doc = decoder.decode(msg.value() or b"{}")
                lat.append(now - doc["sent"])
                part = int(msg.partition() or 0)
                per_part[part] = per_part.get(part, 0) + 1
                pipe.hincrbyfloat(f"{prefix}{doc['card_id']}", "spend", doc["amount"])
                consumer.store_offsets(msg)
            pipe.execute()
            seen += sum(1 for m in batch if not m.error())
            if batch:
                consumer.commit(asynchronous=False)  # after the Redis writes are done
        consume_s = time.perf_counter() - t0
        consumer.close()
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        values = [client.hget(k, "spend") for k in keys]
        total = float(sum(float(v or 0) for v in values))  # type: ignore[misc, arg-type]
        if keys:
            client.delete(*keys)
        lat_ms = np.array(lat) * 1e3 if lat else np.array([np.nan])
        print(f"consumed {seen}/{n} events in {consume_s:.2f} s, per partition "
              f"{dict(sorted(per_part.items()))}, offsets committed")
        print(f"redis: {len(keys)} card totals written and read back, sum {total:,.2f} "
              f"(expected {amounts.sum():,.2f})")
        print("produce->consume ms (backlog, incl. group join): "
              f"p50 {np.percentile(lat_ms, 50):.1f} p99 {np.percentile(lat_ms, 99):.1f} "
              f"max {lat_ms.max():.1f}")
        ok = seen == n and abs(total - float(amounts.sum())) < 1e-3 * max(1.0, total)
        print("demo: OK" if ok else "demo: FAILED (not every event was accounted for)")
        return 0 if ok else 1
    finally:
        broker.stop()
        redis_server.stop()
        print("stopped everything the demo started")
