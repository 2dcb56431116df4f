"""Time framed Avro batch decoding against the JSON path, per event, on the same events.

Fraud-like events (``fraud_transaction``: ids, amounts, currency and country codes,
channel, MCC, event time) are encoded once as JSON and once as Schema-Registry-framed
Avro (``schemas.wireformat.FramedEncoder``); then each batch is decoded and validated
into the same Struct by:

- ``json``: ``schemas.registry.decode_batch`` (the worker's path today);
- ``json-fast``: the same with ``fast=True`` (patterns checked per distinct value);
- ``avro``: ``FramedDecoder.decode_batch`` (fastavro + ``msgspec.convert``);
- ``avro-fast``: the same with ``fast=True`` (convert into the pattern-free twin);
- ``avro+reader``: the same with the pipeline's reader schema (schema resolution);
- ``framed-json``: framed JSON bodies (header stripped, then the JSON path).

The writer schema comes from an in-process dict (after the first batch every decoder
uses its cache, as a worker does). The variants run interleaved, round after round, so
machine noise hits them alike; the minimum and median CPU time per event are printed
with the load average. Run ``python -m benchmarks.bench_wireformat`` (needs the
``registry`` extra).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from statistics import median
from typing import Any

import msgspec
import numpy as np

from schemas.registry import DecodedBatch, decode_batch
from schemas.wireformat import FramedDecoder, FramedEncoder, WriterSchema, frame

__all__ = ["FRAUD_AVRO", "decoders", "main", "payloads"]

FRAUD_AVRO: dict[str, Any] = {
    "type": "record", "name": "FraudTransaction", "namespace": "streamscore", "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "card_id", "type": "long"},
        {"name": "merchant_id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "currency", "type": "string"},
        {"name": "country", "type": "string"},
        {"name": "channel", "type": "string"},
        {"name": "mcc", "type": "int"},
        {"name": "event_time", "type": "double"},
    ]}
_SCHEMA = "fraud_transaction"


def _events(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    cur = ["EUR", "USD", "GBP", "JPY", "CHF"]
    cty = ["DE", "FR", "US", "GB", "JP", "CH", "IT", "ES"]
    chan = ["pos", "ecom", "atm", "moto"]
    return [{"event_id": f"ev-{seed}-{i:08d}", "card_id": int(rng.integers(0, 10**9)),
             "merchant_id": f"m{int(rng.integers(0, 50_000))}",
             "amount": round(float(rng.lognormal(3.5, 1.2)), 2),
             "currency": cur[int(rng.integers(0, 5))], "country": cty[int(rng.integers(0, 8))],
             "channel": chan[int(rng.integers(0, 4))], "mcc": int(rng.integers(0, 10_000)),
             "event_time": 1_795_000_000.0 + i * 0.01} for i in range(n)]


def payloads(n: int, seed: int = 0) -> dict[str, list[bytes]]:
    """The same ``n`` events as JSON, framed Avro (id 1) and framed JSON (id 2)."""
    events = _events(n, seed)
    as_json = [msgspec.json.encode(e) for e in events]
    return {"json": as_json, "avro": FramedEncoder(1, FRAUD_AVRO).encode_batch(events),
            "framed-json": [frame(2, p) for p in as_json]}


def _lookup(schema_id: int) -> WriterSchema:
    kinds = {1: ("AVRO", msgspec.json.encode(FRAUD_AVRO).decode()), 2: ("JSON", "{}")}
    kind, text = kinds[schema_id]
    return WriterSchema(schema_id, kind, text)


def decoders() -> dict[str, tuple[str, Callable[[list[bytes]], DecodedBatch]]]:
    """Variant name -> (which payloads it reads, its batch decode function)."""
    return {
        "json": ("json", lambda b: decode_batch(_SCHEMA, b)),
        "json-fast": ("json", lambda b: decode_batch(_SCHEMA, b, fast=True)),
        "avro": ("avro", FramedDecoder(_SCHEMA, _lookup).decode_batch),
        "avro-fast": ("avro", FramedDecoder(_SCHEMA, _lookup, fast=True).decode_batch),
        "avro+reader": ("avro", FramedDecoder(_SCHEMA, _lookup,
                                              reader_schema=FRAUD_AVRO).decode_batch),
        "framed-json": ("framed-json", FramedDecoder(_SCHEMA, _lookup).decode_batch),
    }


def main() -> None:
    """Print per-event CPU time of each variant for each batch size."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--rounds", type=int, default=30)
    a = p.parse_args()
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    cpu = time.thread_time_ns
    variants = decoders()
    for n in a.batch:
        data = payloads(n)
        want = list(map(msgspec.structs.astuple, variants["json"][1](data["json"]).events))
        for name, (source, decode) in variants.items():  # warm up, and prove equal answers
            got = decode(data[source])
            assert list(map(msgspec.structs.astuple, got.events)) == want, name
            assert not got.rejected, name
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(a.rounds):
            for name, (source, decode) in variants.items():
                batch = data[source]
                c = cpu()
                decode(batch)
                times[name].append((cpu() - c) / n)
        base = median(times["json"])
        for name, t in times.items():
            print(f"batch {n:5d} {name:12s} min {min(t):7.0f} ns/event  median "
                  f"{median(t):7.0f} ns/event  ({median(t) / base:.2f}x json median)")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
