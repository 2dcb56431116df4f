"""The load generator of ``streamscore produce``, the demo and the tests.

``produce_events`` writes input events at a steady rate (replaying
``$STREAMSCORE_HOME/data/<P>/events.parquet`` when generated, else random events from
``make_events``), with a share of them malformed in assorted ways, keyed by entity.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError

__all__ = ["make_events", "produce_events"]

_BAD_KINDS = ("not_json", "missing_field", "wrong_type", "out_of_range", "unknown_version")


def _bad_payload(doc: dict[str, Any], kind: str) -> bytes:
    if kind == "not_json":
        return json.dumps(doc).encode()[:-7]
    bad = dict(doc)
    if kind == "missing_field":
        bad.pop("event_time", None)
    elif kind == "wrong_type":
        bad["event_time"] = "yesterday"
    elif kind == "out_of_range":
        bad["event_time"] = -1.0
    elif kind == "unknown_version":
        bad["schema_version"] = 99
    return json.dumps(bad).encode()


def make_events(
    schema: str, n: int, *, seed: int = 1, data_dir: Path | None = None
) -> list[dict[str, Any]]:
    """``n`` input events: rows of ``events.parquet`` when present, else random ones."""
    import numpy as np

    rng = np.random.default_rng(seed)
    src = data_dir / "events.parquet" if data_dir else None
    if src is not None and src.exists():
        import pyarrow.parquet as pq

        table = pq.read_table(src)
        rows = table.to_pylist()
        picks = rng.integers(0, len(rows), n)
        out = []
        for j, i in enumerate(picks.tolist()):
            doc = {k: v for k, v in rows[i].items() if k != "event_timestamp"}
            doc["event_id"] = f"{seed}-{j}"
            out.append(doc)
        return out
    if schema == "fraud_transaction":
        countries = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "JP"]
        currencies = ["USD", "GBP", "EUR", "EUR", "EUR", "EUR", "EUR", "BRL", "INR", "JPY"]
        out = []
        for j in range(n):
            c = int(rng.integers(0, len(countries)))
            out.append({
                "event_id": f"{seed}-{j}", "card_id": 10_000_000 + int(rng.integers(0, 100_000)),
                "merchant_id": f"m{int(rng.integers(0, 5000)):06d}",
                "amount": round(float(rng.lognormal(3.5, 1.2)), 2), "currency": currencies[c],
                "country": countries[c],
                "channel": ["pos", "ecom", "atm", "moto"][int(rng.integers(0, 4))],
                "mcc": int(rng.choice([5411, 5812, 5541, 4511, 5732, 5651, 7995])),
                "event_time": 0.0,
            })
        return out
    if schema == "pricing_request":
        out = []
        for j in range(n):
            base = round(float(rng.uniform(2, 80)), 2)
            out.append({
                "event_id": f"{seed}-{j}", "sku_id": 500_000 + int(rng.integers(0, 20_000)),
                "store_id": f"s{int(rng.integers(0, 200)):04d}", "base_price": base,
                "candidate_price": round(base * float(rng.uniform(0.9, 1.1)), 2),
                "event_time": 0.0,
            })
        return out
    raise ConfigError(f"no event generator for schema {schema!r}")


def produce_events(
    config: Any, bootstrap: str, n: int, rate: float, *, bad_ratio: float = 0.0, seed: int = 1,
    progress: bool = True, settings: dict[str, Any] | None = None,
    data_dir: Path | None = None,
) -> dict[str, int]:
    """Produce ``n`` events at ``rate``/s (0 = as fast as possible); return counts."""
    import numpy as np
    from confluent_kafka import Producer

    from features.repo import PIPELINES
    from features.repo import data_dir as default_data_dir

    # The shipped repos' synthetic data, else random events of the schema.
    repo = config.resolve_path(config.features.repo).name
    if data_dir is None and repo in PIPELINES:
        data_dir = default_data_dir(repo)
    events = make_events(config.schema, n, seed=seed, data_dir=data_dir)
    rng = np.random.default_rng(seed + 1)
    bad = rng.random(n) < bad_ratio
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3,
                         **(settings or {})})
    counts = {"good": 0, "bad": 0}
    started = time.perf_counter()
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"producing to {config.topics.input}", total=n)
        for j, doc in enumerate(events):
            if rate > 0:
                due = started + j / rate
                delay = due - time.perf_counter()
                if delay > 0.001:
                    time.sleep(delay)
            doc[config.event.time_field] = round(time.time(), 6)
            key = str(doc.get(config.event.key, "")).encode()
            if bad[j]:
                value = _bad_payload(doc, _BAD_KINDS[j % len(_BAD_KINDS)])
                counts["bad"] += 1
            else:
                value = json.dumps(doc).encode()
                counts["good"] += 1
            while True:
                try:
                    producer.produce(config.topics.input, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if j % 1000 == 0:
                bar.update(task, completed=j)
        bar.update(task, completed=n)
    left = producer.flush(60)
    if left:
        raise ConfigError(f"{left} events were not acknowledged by the broker")
    return counts
