"""Latency measurement: a consumer thread that matches outputs to events, and HDR stats.

``Collector`` reads the decisions and dead-letter topics (or, for the plain hop, the
input topic itself) from the beginning of every partition, without a consumer group
(no join delay), stamps each record's arrival time and files it under the event it
answers. Event ids are ``<prefix><i>`` (see ``benchmarks.loadgen``); the harness
registers each prefix with its size before sending, so the collector fills plain numpy
arrays and every event is accounted for: a decision, a dead letter, or nothing (lost or
late). Duplicates (at-least-once redelivery) are counted, never double-counted.

``latency_stats`` turns microsecond latencies into HDR-histogram percentiles
(``hdrhistogram`` package, 3 significant digits).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = ["STAGES", "Collector", "Expected", "latency_stats", "percentile_table"]

# The worker's per-stage stamps (schemas.decisions.StageLatencies), in pipeline order.
STAGES = ("decode", "features", "score", "policy", "encode")
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)
_ID = re.compile(rb'"event_id":\s*"([^"]+)"')
# Dead letters carry the original payload base64-encoded (msgspec bytes) or as text
# (the naive worker); both are searched for the event id.
_PAYLOAD = re.compile(rb'"payload":\s*"([^"]*)"')

F64 = npt.NDArray[np.float64]


class _DecisionView(msgspec.Struct):
    """The few decision fields the harness reads (msgspec skips the rest)."""

    event_id: str
    decided_at: float = 0.0
    latency_ms: dict[str, float] = {}
    degraded_reasons: list[str] = []


@dataclass
class Expected:
    """What arrived for one registered prefix, one slot per event."""

    n: int
    recv: F64 = field(init=False)  # arrival wall time (s); NaN = nothing yet
    msg_ts: F64 = field(init=False)  # output message timestamp (s, ms resolution)
    decided_at: F64 = field(init=False)
    stages: F64 = field(init=False)  # n x len(STAGES) milliseconds
    kind: npt.NDArray[np.int8] = field(init=False)  # 0 none, 1 decision, 2 dead letter
    duplicates: int = 0
    count: int = 0
    # degraded reason -> decisions carrying it (a fast but degraded stack is no win)
    degraded: dict[str, int] = field(default_factory=dict)
    degraded_any: int = 0

    def __post_init__(self) -> None:
        self.recv = np.full(self.n, np.nan)
        self.msg_ts = np.full(self.n, np.nan)
        self.decided_at = np.full(self.n, np.nan)
        self.stages = np.full((self.n, len(STAGES)), np.nan)
        self.kind = np.zeros(self.n, dtype=np.int8)


class Collector(threading.Thread):
    """Consumes output topics in a background thread and files records by event id.

    ``mode`` is ``"decisions"`` (decision records: JSON with ``event_id``) or ``"raw"``
    (the plain hop: the payloads the load generator sent). Topics whose name is in
    ``dead_letter_topics`` hold dead letters.
    """

    def __init__(
        self, bootstrap: str, topics: list[str], *, dead_letter_topics: tuple[str, ...] = (),
        mode: str = "decisions", settings: dict[str, Any] | None = None,
        idle_backoff_ms: float = 5.0,
    ) -> None:
        super().__init__(name="bench-collector", daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from stream.kafka.idle import IdleFetch

        self.mode = mode
        self.dead = set(dead_letter_topics)
        backoff_s = max(idle_backoff_ms, 0.0) / 1000.0
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": "bench-collector-unused",
            "enable.auto.commit": False, "fetch.wait.max.ms": 5,
            "fetch.min.bytes": 1, **IdleFetch.settings(backoff_s), **(settings or {}),
        })
        meta = self._consumer.list_topics(timeout=10)
        parts = [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in topics for p in sorted(meta.topics[t].partitions)
        ]
        self._consumer.assign(parts)
        # Once input has stopped the partitions are paused (stream.kafka.idle), as in the worker:
        # on noida-db an idle collector otherwise spins the broker and a core between
        # rate steps. (Never while records arrive: latencies are measured as before.)
        keys = [(tp.topic, tp.partition) for tp in parts]
        self._fetch = IdleFetch(self._consumer, lambda: keys, backoff_s)
        self._expected: dict[str, Expected] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.unmatched = 0
        self.errors = 0
        self._decoder = msgspec.json.Decoder(_DecisionView)

    def expect(self, prefix: str, n: int) -> Expected:
        """Register ``n`` events with ids ``<prefix>0 .. <prefix>{n-1}``."""
        exp = Expected(n)
        with self._lock:
            self._expected[prefix] = exp
        return exp

    def accounted(self, prefix: str) -> int:
        """How many events of ``prefix`` got an output so far."""
        return self._expected[prefix].count

    def wait(
        self, prefix: str, timeout: float, alive: Callable[[], bool] | None = None,
    ) -> bool:
        """Wait until every event of ``prefix`` is accounted for; False on timeout.

        ``alive`` (the stack's liveness check) ends the wait early when it turns False.
        """
        exp = self._expected[prefix]
        deadline = time.monotonic() + timeout
        checked = time.monotonic()
        while exp.count < exp.n:
            now = time.monotonic()
            if now > deadline:
                return False
            if alive is not None and now - checked > 0.5:
                checked = now
                if not alive():
                    time.sleep(0.5)  # let outputs already sent arrive
                    return exp.count >= exp.n
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        """Stop the thread and close the consumer."""
        self._halt.set()
        self.join(timeout=10)

    def run(self) -> None:
        from stream.kafka.idle import is_eof

        consume = self._fetch.consume
        try:
            while not self._halt.is_set():
                msgs = consume(2000, 0.05)
                if not msgs:
                    continue
                now = time.time()
                with self._lock:
                    for msg in msgs:
                        if msg.error():
                            if not is_eof(msg):
                                self.errors += 1
                            continue
                        self._file(msg, now)
        finally:
            self._fetch.close()
            self._consumer.close()

    def _file(self, msg: Any, now: float) -> None:
        value = msg.value() or b""
        stages: list[float] | None = None
        decided = float("nan")
        reasons: list[str] = []
        if msg.topic() in self.dead:
            kind = 2
            eid = _dead_letter_id(value)
        elif self.mode == "raw":
            kind = 1
            m = _ID.search(value)
            eid = m.group(1).decode() if m else None
        else:
            kind = 1
            try:
                view = self._decoder.decode(value)
            except msgspec.DecodeError:
                self.unmatched += 1
                return
            eid = view.event_id
            decided = view.decided_at or float("nan")
            lat = view.latency_ms
            stages = [float(lat.get(s, np.nan)) for s in STAGES]
            reasons = view.degraded_reasons
        if eid is None:
            self.unmatched += 1
            return
        prefix, idx = _split(eid)
        exp = self._expected.get(prefix)
        if exp is None or idx < 0 or idx >= exp.n:
            self.unmatched += 1
            return
        if exp.kind[idx]:
            exp.duplicates += 1
            return
        exp.kind[idx] = kind
        exp.recv[idx] = now
        ts_type, ts = msg.timestamp()
        exp.msg_ts[idx] = ts / 1e3 if ts_type and ts > 0 else np.nan
        exp.decided_at[idx] = decided
        if stages is not None:
            exp.stages[idx] = stages
        if reasons:
            exp.degraded_any += 1
            for r in reasons:
                exp.degraded[r] = exp.degraded.get(r, 0) + 1
        exp.count += 1


def _split(eid: str) -> tuple[str, int]:
    # ids are <prefix><digits>; the prefix ends with a non-digit
    j = len(eid)
    while j > 0 and eid[j - 1].isdigit():
        j -= 1
    if j == len(eid):
        return eid, -1
    return eid[:j], int(eid[j:])


def _dead_letter_id(value: bytes) -> str | None:
    """The event id of a dead letter's original payload (text or base64)."""
    import base64
    import binascii

    # Text payload (JSON-escaped inside the record): unescape the quotes and look.
    found = _ID.search(value.replace(b'\\"', b'"'))
    if found:
        return found.group(1).decode()
    m = _PAYLOAD.search(value)
    if not m:
        return None
    try:  # base64 of the original bytes (msgspec's encoding of the worker's DeadLetter)
        decoded = base64.b64decode(m.group(1), validate=True)
    except (binascii.Error, ValueError):
        return None
    found = _ID.search(decoded)
    return found.group(1).decode() if found else None


def latency_stats(latency_us: F64, *, highest_us: int = 3_600_000_000) -> dict[str, float]:
    """Percentiles (ms) of latencies in microseconds, from an HDR histogram."""
    from hdrh.histogram import HdrHistogram

    values = np.asarray(latency_us, dtype=np.float64)
    values = values[np.isfinite(values)]
    out: dict[str, float] = {"count": float(values.size)}
    if values.size == 0:
        return out
    hist = HdrHistogram(1, highest_us, 3)
    for v in np.clip(np.rint(values), 1, highest_us).astype(np.int64).tolist():
        hist.record_value(v)
    for p in PERCENTILES:
        out[_pname(p)] = hist.get_value_at_percentile(p) / 1e3
    out["mean"] = float(hist.get_mean_value()) / 1e3
    return out


def percentile_table(values_ms: F64, points: int = 200) -> tuple[F64, F64]:
    """(latency ms, cumulative fraction) pairs for a CDF plot."""
    v = np.sort(np.asarray(values_ms, dtype=np.float64)[np.isfinite(values_ms)])
    if v.size == 0:
        return np.empty(0), np.empty(0)
    q = np.concatenate([np.linspace(0, 0.99, points // 2), 1 - np.logspace(-2, -5, points // 2)])
    q = np.clip(q, 0, 1)
    return np.quantile(v, q), q


def _pname(p: float) -> str:
    return "max" if p == 100.0 else f"p{p:g}".replace(".", "")
