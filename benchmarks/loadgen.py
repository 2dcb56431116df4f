"""Open-loop load generator: pipeline events to a Kafka topic at a fixed target rate.

Open loop means the send schedule never waits for the system under test: event ``i`` of
a run is due at ``start + i / rate``, fixed before the first send. When the producer
falls behind (a slow broker, a busy core), due events go out as fast as possible, but
each keeps its *scheduled* time as its Kafka message timestamp (``timestamp=`` in
``produce``; the worker starts its end-to-end clock there) and the harness measures
from the same scheduled time, so a stall shows up as latency instead of silently
lowering the offered load (no coordinated omission).

Events are realistic: fields come from the generated events of the pipeline
(``$STREAMSCORE_HOME/data/<P>/events.parquet``, written by ``features generate``) with
the primary entity (card / SKU) redrawn from a Zipf law over the known entities (hot
keys), a share of entities that exist nowhere (unknown -> missing features) and a share
of malformed payloads (not JSON, wrong type, missing field, out of range) that must end
on the dead-letter topic. Every payload, malformed ones included, carries its event id
as ``"event_id":"<id>"`` so the harness can account for each one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = [
    "KEY_FIELDS",
    "EventBatch",
    "EventFactory",
    "SendReport",
    "event_id_of",
    "send_open_loop",
]

# Primary entity of each pipeline's events: the one that gets the Zipf skew.
KEY_FIELDS = {"fraud": "card_id", "pricing": "sku_id"}
# Unknown entities live far above every generated id range.
UNKNOWN_BASE = 9_000_000_000_000
_ID_IN_PAYLOAD = re.compile(rb'"event_id":\s*"([^"]+)"')
MALFORMED_KINDS = ("not_json", "wrong_type", "missing_field", "out_of_range")


def event_id_of(payload: bytes | None) -> str | None:
    """The event id inside a payload (works for the malformed ones this module makes)."""
    if not payload:
        return None
    match = _ID_IN_PAYLOAD.search(payload)
    return match.group(1).decode() if match else None


@dataclass
class EventBatch:
    """Pre-encoded events of one run: keys, payloads and what kind each one is."""

    ids: list[str]
    keys: list[bytes]
    payloads: list[bytes]
    kind: npt.NDArray[np.int8]  # 0 known entity, 1 unknown entity, 2 malformed

    def __len__(self) -> int:
        return len(self.payloads)

    @property
    def good(self) -> int:
        """Events that must yield a decision."""
        return int((self.kind < 2).sum())

    @property
    def malformed(self) -> int:
        """Events that must yield a dead letter."""
        return int((self.kind == 2).sum())


class EventFactory:
    """Builds pipeline events from the generated ones, with hot keys, unknowns and garbage."""

    def __init__(
        self,
        pipeline: str,
        templates: list[dict[str, Any]],
        entities: npt.NDArray[np.int64],
        *,
        zipf_s: float = 1.1,
        unknown_share: float = 0.02,
        malformed_share: float = 0.01,
        seed: int = 11,
    ) -> None:
        if pipeline not in KEY_FIELDS:
            raise ValueError(f"unknown pipeline {pipeline!r}")
        if not templates or len(entities) == 0:
            raise ValueError("the load generator needs template events and entities")
        if not (0 <= unknown_share < 1 and 0 <= malformed_share < 1):
            raise ValueError("shares must be in [0, 1)")
        self.pipeline = pipeline
        self.key_field = KEY_FIELDS[pipeline]
        self.templates = templates
        self.rng = np.random.default_rng(seed)
        # Hot keys: entity of rank r drawn with probability ~ 1 / r**s (a random ranking).
        self.entities = self.rng.permutation(np.asarray(entities, dtype=np.int64))
        ranks = np.arange(1, len(self.entities) + 1, dtype=np.float64)
        weights = ranks**-zipf_s
        self._cdf = np.cumsum(weights / weights.sum())
        self.zipf_s = zipf_s
        self.unknown_share = unknown_share
        self.malformed_share = malformed_share
        self._encoder = msgspec.json.Encoder()
        self._serial = 0

    @classmethod
    def from_data_dir(cls, pipeline: str, data_dir: str | Path, **kwargs: Any) -> EventFactory:
        """Load templates and the entity set from ``<data_dir>/events.parquet``."""
        import pyarrow.parquet as pq

        path = Path(data_dir) / "events.parquet"
        if not path.is_file():
            raise FileNotFoundError(
                f"no generated events at {path}; run 'streamscore features generate "
                f"--pipeline {pipeline}' first"
            )
        table = pq.read_table(path)
        keep = [c for c in table.column_names if c != "label"]
        rows = table.select(keep).slice(0, 50_000).to_pylist()
        entities = np.unique(table.column(KEY_FIELDS[pipeline]).to_numpy())
        return cls(pipeline, rows, entities, **kwargs)

    def draw_entities(self, n: int) -> npt.NDArray[np.int64]:
        """``n`` primary entity ids with the Zipf skew."""
        idx = np.searchsorted(self._cdf, self.rng.random(n), side="right")
        return self.entities[np.minimum(idx, len(self.entities) - 1)]

    def make(self, n: int, prefix: str, times: Sequence[float] | None = None) -> EventBatch:
        """``n`` events with ids ``<prefix><i>`` and event times ``times`` (default now)."""
        rng = self.rng
        u = rng.random(n)
        kind = np.where(u < self.malformed_share, 2,
                        np.where(u < self.malformed_share + self.unknown_share, 1, 0))
        kind = kind.astype(np.int8)
        ents = self.draw_entities(n)
        unknown = UNKNOWN_BASE + rng.integers(0, 10**9, n)
        ents = np.where(kind == 1, unknown, ents)
        tpl_idx = rng.integers(0, len(self.templates), n)
        now = time.time()
        ids, keys, payloads = [], [], []
        kf = self.key_field
        enc = self._encoder.encode
        for i in range(n):
            eid = f"{prefix}{i}"
            ev = dict(self.templates[tpl_idx[i]])
            ev["event_id"] = eid
            ev[kf] = int(ents[i])
            ev["event_time"] = round(float(times[i]) if times is not None else now, 3)
            payload = self._malformed(ev, i) if kind[i] == 2 else enc(ev)
            ids.append(eid)
            keys.append(str(ev[kf]).encode())
            payloads.append(payload)
        self._serial += n
        return EventBatch(ids, keys, payloads, kind)

    def _malformed(self, ev: dict[str, Any], i: int) -> bytes:
        how = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
        bad = dict(ev)
        if how == "not_json":
            return self._encoder.encode(bad)[:-7] + b"#garbage"
        if how == "wrong_type":
            bad[self.key_field] = "not-a-number"
        elif how == "missing_field":
            bad.pop("event_time", None)
        else:  # out of range: a negative amount / price
            for name in ("amount", "base_price"):
                if name in bad:
                    bad[name] = -1.0
        return self._encoder.encode(bad)


@dataclass
class SendReport:
    """How well the producer kept to its schedule."""

    target_rate: float
    sent: int
    delivered: int = 0
    errors: int = 0
    scheduled_s: float = 0.0  # schedule length: (n - 1) / rate
    actual_s: float = 0.0  # first send -> last send
    max_lag_ms: float = 0.0  # worst (send time - scheduled time)
    p99_lag_ms: float = 0.0
    start: float = 0.0  # wall clock of the schedule's t = 0
    scheduled: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))

    @property
    def achieved_rate(self) -> float:
        """Events per second actually sent."""
        return self.sent / self.actual_s if self.actual_s > 0 else float(self.sent)

    @property
    def rate_accuracy(self) -> float:
        """Achieved / target rate (1.0 = on target)."""
        return self.achieved_rate / self.target_rate if self.target_rate > 0 else 1.0

    def summary(self) -> dict[str, float | int]:
        """Plain numbers for the JSON report."""
        return {
            "target_rate": self.target_rate, "sent": self.sent, "delivered": self.delivered,
            "errors": self.errors, "achieved_rate": round(self.achieved_rate, 1),
            "rate_accuracy": round(self.rate_accuracy, 4),
            "max_lag_ms": round(self.max_lag_ms, 3), "p99_lag_ms": round(self.p99_lag_ms, 3),
        }


def schedule(n: int, rate: float, start: float) -> npt.NDArray[np.float64]:
    """Scheduled send times (unix seconds) of ``n`` events at ``rate`` events/s."""
    return start + np.arange(n, dtype=np.float64) / float(rate)


def send_open_loop(
    producer: Any,
    topic: str,
    keys: Sequence[bytes],
    payloads: Sequence[bytes],
    rate: float,
    *,
    start: float | None = None,
    flush_timeout: float = 30.0,
    on_tick: Callable[[int], None] | None = None,
) -> SendReport:
    """Send ``payloads`` to ``topic`` on the open-loop schedule ``start + i / rate``.

    ``producer`` is a confluent-kafka Producer. Each message's timestamp is its scheduled
    time in ms. Returns once everything is delivered (or ``flush_timeout`` passed).
    """
    n = len(payloads)
    if rate <= 0:
        raise ValueError("rate must be positive")
    t0 = (time.time() + 0.05) if start is None else start
    sched = schedule(n, rate, t0)
    sched_ms = (sched * 1000.0).astype(np.int64).tolist()
    lag = np.zeros(n)
    report = SendReport(target_rate=rate, sent=n, start=t0, scheduled=sched)
    delivered = 0
    errors = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal delivered, errors
        if err is None:
            delivered += 1
        else:
            errors += 1

    produce, poll = producer.produce, producer.poll
    sched_list = sched.tolist()
    i = 0
    first_send = last_send = 0.0
    clock = time.time
    while i < n:
        now = clock()
        due = sched_list[i]
        if now < due:
            # Sleep most of the gap; short gaps are spun through poll(0) instead.
            gap = due - now
            if gap > 0.002:
                time.sleep(gap - 0.001)
            poll(0)
            continue
        if i == 0:
            first_send = now
        # Everything due by now goes out in one burst, stamped with its own schedule.
        while i < n and sched_list[i] <= now:
            try:
                produce(topic, payloads[i], key=keys[i], timestamp=sched_ms[i],
                        on_delivery=on_delivery)
            except BufferError:
                poll(0.01)  # local queue full: let deliveries drain, then retry this one
                now = clock()
                continue
            lag[i] = now - sched_list[i]
            i += 1
        last_send = now
        poll(0)
        if on_tick is not None:
            on_tick(i)
    producer.flush(flush_timeout)
    report.delivered, report.errors = delivered, errors
    report.scheduled_s = (n - 1) / rate if n > 1 else 0.0
    # The last event's own share of time counts too: n events at rate r take n / r.
    report.actual_s = max(last_send - first_send + 1.0 / rate, 1e-9) if n else 0.0
    report.max_lag_ms = float(lag.max() * 1e3) if n else 0.0
    report.p99_lag_ms = float(np.percentile(lag, 99) * 1e3) if n else 0.0
    return report
