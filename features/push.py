"""Streaming card velocity updates (count and sum over sliding windows) in Feast's layout.

Choice and why: the window state (per-minute buckets of count and sum plus the running
window totals, one small struct-packed string per card, format in ``features.velocity_lua``) lives
in Redis, and a Lua script, run server side, folds each batch into it, computes the
windows and writes the view's features into the card's
Feast hash (murmur3 field names, Feast ``Value`` protobufs, ``_ts:view``), so
``get_online_features`` and ``OnlineReader`` read them like any pushed row. One pipelined
round trip per batch, no read-modify-write race between workers (each script runs
atomically), and no worker-local state to lose on a restart or a partition rebalance.
Going through Feast's push path instead costs a Python protobuf build per row plus a
timestamp read before every write (~8k rows/s here); this runs well above 40k rows/s
(see ``benchmarks/bench_features.py``).

Replays and clocks: given each event's input partition and offset, the script keeps
per card and partition the highest offset applied, atomically with the windows, and skips
events at or below it, so redelivered input (a restart, a rebalance, a retried batch)
never counts twice; events dated beyond ``now + max_skew_s`` are refused and returned to
the caller (``UpdateResult.refused``, dead-letter code ``EVENT_TIME_SKEW``). On Redis
Cluster (``state_in_hash``) the state is a field of the card's Feast hash, so each script
touches one key.

Windows: a feature named ``<anything>count_<N><s|m|h|d>`` or ``<anything>sum_<N><unit>``
is the count or sum of the card's events whose bucket (``bucket_s`` seconds, default 60)
lies within the last ``N<unit>`` before the card's latest event bucket, inclusive; so a
window is exact up to the bucket granularity. State keys are ``ssvel:`` + the Feast key
and expire after the longest window. Scripts are chunked (``cards_per_script``, default
32: ~0.3-0.6 ms of Redis each) so no single one blocks the online reads that share Redis
(their timeout is ~20 ms); Redis runs the pipelined scripts of one update a read buffer
(16 KB, 2-3 scripts) at a time, serving other clients in between, and a script's fixed
cost is too small to measure against its cards (``bench features``, RESULTS.md).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import redis

from features import layout
from features.breaker import CircuitBreaker
from features.cluster import ClusterMap, key_slots
from features.exceptions import FeatureRepoError
from features.velocity_lua import SCRIPT as _SCRIPT
from features.velocity_lua import part_rows
from features.velocity_send import run_on_cluster, run_on_redis

__all__ = [
    "EVENT_TIME_SKEW",
    "UpdateResult",
    "VelocityUpdater",
    "event_time_skewed",
    "parse_window",
    "partition_key",
    "state_field",
]

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW = re.compile(r"(count|sum)_(\d+)([smhd])$")
# Feast Value tag per feature type, as the Lua encoder needs it.
# the dead-letter code of an event ``update`` refuses for its event time
EVENT_TIME_SKEW = "event_time_skew"
_MAX_PARTITION = 1 << 20  # partitions per topic a watermark key can tell apart
_TYPE_TAGS = {"INT64": 0x20, "INT32": 0x18, "DOUBLE": 0x29, "FLOAT": 0x35}


def _bulk(raw: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def parse_window(feature: str) -> tuple[str, int] | None:
    """``("count" | "sum", seconds)`` from a feature name like ``velocity_sum_10m``."""
    m = _WINDOW.search(feature)
    return (m.group(1), int(m.group(2)) * _UNITS[m.group(3)]) if m else None


@dataclass
class UpdateResult:
    """Outcome of one ``update``.

    ``rows`` events were applied to ``cards`` cards; ``status`` is ``ok``, ``timeout``,
    ``unavailable``, ``circuit_open`` or ``error``. ``skipped`` events were already in the
    state (replayed input at or below their partition's watermark, or the same
    partition/offset twice in one call). ``refused`` holds the input row indices of events
    dated beyond ``now + max_skew_s``: never applied, whatever the status; the caller
    dead-letters them with code ``EVENT_TIME_SKEW``.
    """

    rows: int
    cards: int
    status: str = "ok"
    error: str | None = None
    skipped: int = 0
    refused: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def partition_key(topic: str, partition: int) -> float:
    """The number an input (topic, partition) has in the velocity state's watermarks:
    crc32 of the topic above the partition's 20 bits (exact in a float64)."""
    if not 0 <= int(partition) < _MAX_PARTITION:
        raise ValueError(f"partition {partition} out of range 0..{_MAX_PARTITION - 1}")
    return float(zlib.crc32(topic.encode("utf-8")) * _MAX_PARTITION + int(partition))


def event_time_skewed(
    event_times: Sequence[float] | np.ndarray, now: float, max_skew_s: float
) -> np.ndarray:
    """bool per event: dated beyond ``now + max_skew_s`` (what ``update`` refuses)."""
    return np.asarray(event_times, dtype=np.float64) > now + max_skew_s


class VelocityUpdater:
    """Applies batches of card events to a velocity view (default ``card_velocity``)."""

    def __init__(
        self,
        repo_path: str | Path,
        view: str = "card_velocity",
        redis_url: str | None = None,
        *,
        bucket_s: int = 60,
        timeout_ms: float = 1000.0,
        cards_per_script: int = 32,
        breaker: CircuitBreaker | None = None,
        max_skew_s: float = 300.0,
        state_in_hash: bool = False,
    ) -> None:
        from features.online import connection_pool
        from features.repo import check_online_store, open_store, redis_url_from_repo

        given = redis_url or os.environ.get("REDIS_URL") or None  # see OnlineReader
        url = given or redis_url_from_repo(repo_path)
        store = open_store(repo_path, given)
        cluster_urls = check_online_store(store)
        state_in_hash = state_in_hash or cluster_urls is not None
        views = {fv.name: fv for fv in store.list_feature_views()}
        if view not in views:
            raise FeatureRepoError(f"feature repo {repo_path} has no view {view!r}")
        fv = views[view]
        entity_cols = list(fv.entity_columns)
        if len(entity_cols) != 1 or entity_cols[0].dtype.to_value_type().name != "INT64":
            raise FeatureRepoError(f"view {view} must have exactly one int64 join key")
        self.join_key = entity_cols[0].name
        self.bucket_s = int(bucket_s)
        if max_skew_s < 0:
            raise ValueError("max_skew_s must be >= 0")
        self.max_skew_s = float(max_skew_s)
        windows: dict[int, list[str]] = {}  # window buckets -> [count field, tag, sum field, tag]
        for f in fv.features:
            parsed = parse_window(f.name)
            tag = _TYPE_TAGS.get(f.dtype.to_value_type().name)
            if parsed is None or tag is None:
                raise FeatureRepoError(
                    f"{view}:{f.name} is not a velocity feature (name ..count_<N><unit> or"
                    " ..sum_<N><unit>, type int32/int64/float32/float64)"
                )
            kind, seconds = parsed
            buckets = max(1, math.ceil(seconds / self.bucket_s))
            slot = windows.setdefault(buckets, ["", "", "", ""])
            field_ = layout.field_name(view, f.name).decode("latin-1")
            slot[0 if kind == "count" else 2] = field_
            slot[1 if kind == "count" else 3] = str(tag)
        self.features = [f.name for f in fv.features]
        key_ttl = getattr(store.config.online_store, "key_ttl_seconds", None) or 0
        longest = max(windows)
        header: list[Any] = [
            len(windows),
            layout.ts_field(view),
            (longest + 1) * self.bucket_s + 60,
            key_ttl,
        ]
        for buckets, (cf, ct, sf, st) in sorted(windows.items()):
            header += [buckets, cf.encode("latin-1"), ct or "0", sf.encode("latin-1"), st or "0"]
        encoded = [a if isinstance(a, bytes) else str(a).encode() for a in header]
        self._header = b"".join(_bulk(a) for a in encoded)
        # the header, then the card, pair, part and event blobs, heal bucket, bucket_s, field
        self._n_args = len(header) + 7
        # state kept in a field of the Feast hash: one key per card (Redis Cluster's rule)
        self.state_field = state_field(view) if state_in_hash else b""
        self._tail = _bulk(b"%d" % self.bucket_s) + _bulk(self.state_field)
        self._kpc = 1 if state_in_hash else 2
        suffix = store.config.project.encode("utf-8")
        self._suffix = suffix
        prefix = layout.entity_key([self.join_key], [layout.KIND_INT64], [0])[:-8]
        self._prefix = prefix
        # one card's keys in RESP with the 8 id bytes zeroed: filled in by numpy
        key_len = len(prefix) + 8 + len(suffix)
        first = b"$%d\r\n" % key_len + prefix
        if state_in_hash:
            self._id_at: tuple[int, ...] = (len(first),)
            template = first + bytes(8) + suffix + b"\r\n"
        else:
            second = b"\r\n$%d\r\nssvel:" % (key_len + 6) + prefix
            self._id_at = (len(first), len(first) + 8 + len(suffix) + len(second))
            template = first + bytes(8) + suffix + second + bytes(8) + suffix + b"\r\n"
        self._keys_template = np.frombuffer(template, np.uint8)
        self._script = _SCRIPT
        self._sha = hashlib.sha1(_SCRIPT.encode("utf-8"), usedforsecurity=False).hexdigest()
        self._url = url
        self._timeout_ms = timeout_ms
        self._lock = threading.Lock()
        self._cmap: ClusterMap | None = None
        if cluster_urls is not None:
            self._cmap = ClusterMap(cluster_urls, timeout_ms / 1000.0)
        else:
            self._pool = connection_pool(url, timeout_ms / 1000.0)
            # One connection of the updater's own, used under a lock (see OnlineReader).
            self._conn: Any = self._pool.make_connection()
        self._chunk = int(cards_per_script)
        self.breaker = breaker or CircuitBreaker()

    def card_key(self, card: int) -> bytes:
        """The Feast hash key of one card (the state lives there or in ``ssvel:`` + it)."""
        return self._prefix + int(card).to_bytes(8, "little", signed=True) + self._suffix

    def update(
        self,
        card_ids: Sequence[int] | np.ndarray,
        amounts: Sequence[float] | np.ndarray,
        event_times: Sequence[float] | np.ndarray,
        *,
        topics: str | Sequence[str] | None = None,
        partitions: Sequence[int] | np.ndarray | None = None,
        offsets: Sequence[int] | np.ndarray | None = None,
        now: float | None = None,
    ) -> UpdateResult:
        """Add one batch of events (event times in unix seconds); never raises on Redis faults.

        With ``partitions`` and ``offsets`` (each event's input partition and offset; its
        topic from ``topics``, one name or one per event) the update is replay-safe: per
        card and input partition the state keeps the highest offset applied, atomically
        with the windows, and events at or below it are skipped. That is exact as long as
        one partition's events reach the updater in offset order from a point below which
        everything was applied (a consumer's resume point once the batch's update returned).
        Events dated beyond ``now + max_skew_s`` (``now`` defaults to the clock) are refused
        (``UpdateResult.refused``). On a timeout the batch's scripts may still have run:
        retrying the same events is then safe when offsets are given.
        """
        cards = np.asarray(card_ids, dtype=np.int64)
        amount = np.asarray(amounts, dtype=np.float64)
        times = np.asarray(event_times, dtype=np.float64)
        n = len(cards)
        if not (n == len(amount) == len(times)):
            raise ValueError("card_ids, amounts and event_times must have the same length")
        if (partitions is None) != (offsets is None):
            raise ValueError("partitions and offsets go together")
        if n == 0:
            return UpdateResult(0, 0)
        clock = time.time() if now is None else float(now)
        ahead = times > clock + self.max_skew_s
        refused = np.flatnonzero(ahead)
        keys = offs = None
        if partitions is not None and offsets is not None:
            keys = self._partition_keys(topics, partitions, n)
            offs = np.asarray(offsets, dtype=np.float64)
            if len(keys) != n or len(offs) != n:
                raise ValueError("partitions and offsets need one value per event")
        # a missing or non-finite amount still counts as an event but adds nothing to sums
        amount = np.where(np.isfinite(amount), amount, 0.0)
        keep = np.isfinite(times) & ~ahead  # an event without a usable time cannot be bucketed
        if keys is not None and offs is not None:
            # the same record twice in one call: keep its first copy
            order = np.lexsort((offs, keys))
            twice = (keys[order][1:] == keys[order][:-1]) & (offs[order][1:] == offs[order][:-1])
            keep[order[1:][twice]] = False
        dropped = n - int(keep.sum()) - len(refused)
        if not keep.all():
            cards, amount, times = cards[keep], amount[keep], times[keep]
            if keys is not None and offs is not None:
                keys, offs = keys[keep], offs[keep]
        if len(cards) == 0:
            return UpdateResult(0, 0, skipped=dropped, refused=refused)
        if not self.breaker.allow():
            return UpdateResult(0, 0, "circuit_open", "Redis circuit breaker is open",
                                refused=refused)
        heal = math.floor((clock + 2 * self.max_skew_s) / self.bucket_s)
        ev = _Events(cards, amount, times, keys, offs)
        if self._cmap is not None:
            return self._update_cluster(ev, heal, dropped, refused)
        try:
            n_cards, skipped = self._send(self._commands(ev, heal))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self.breaker.record_failure()
            log.warning("velocity update of %d events lost: %s", len(cards), exc)
            status = "timeout" if isinstance(exc, redis.TimeoutError) else "unavailable"
            return UpdateResult(0, 0, status, str(exc), refused=refused)
        except redis.RedisError as exc:  # e.g. a key of the wrong type: Redis is up
            log.warning("velocity update of %d events failed: %s", len(cards), exc)
            return UpdateResult(0, 0, "error", str(exc), refused=refused)
        self.breaker.record_success()
        return UpdateResult(len(cards) - skipped, n_cards, skipped=skipped + dropped,
                            refused=refused)

    @staticmethod
    def _partition_keys(
        topics: str | Sequence[str] | None, partitions: Sequence[int] | np.ndarray, n: int
    ) -> np.ndarray:
        parts = np.asarray(partitions, dtype=np.int64)
        if len(parts) and (parts.min() < 0 or parts.max() >= _MAX_PARTITION):
            raise ValueError(f"partitions must be in 0..{_MAX_PARTITION - 1}")
        if topics is None or isinstance(topics, str):
            base = np.full(len(parts), float(zlib.crc32((topics or "").encode("utf-8"))))
        else:
            crc: dict[str, float] = {}
            base = np.array(
                [crc.get(t) or crc.setdefault(t, float(zlib.crc32(t.encode("utf-8"))))
                 for t in topics],
                dtype=np.float64,
            )
            if len(base) != n:
                raise ValueError("topics need one name per event (or a single name)")
        return base * _MAX_PARTITION + parts

    def _commands(
        self, ev: _Events, heal: int, groups: np.ndarray | None = None
    ) -> list[tuple[int, bytes, int]]:
        """One EVALSHA per chunk of cards, RESP-encoded by numpy (no per-event Python).

        ``groups`` (one int per event, the same for all events of a card: its cluster
        slot) keeps every chunk inside one group; each command comes with its group and
        the number of events it carries.
        """
        cards, amount, times, keys, offs = ev
        buckets = np.floor(times / self.bucket_s).astype(np.int64)
        # sort by (group, card, bucket): each (card, bucket) pair, and each card, is one run
        sort_keys: tuple[np.ndarray, ...] = (buckets, cards)
        if groups is not None:
            sort_keys += (groups,)
        order = np.lexsort(sort_keys)
        g_sorted = groups[order] if groups is not None else None
        ev_keys = ev_offs = None
        if keys is not None and offs is not None:
            # the event blob's order: (group, card, partition, offset)
            order2 = np.lexsort((offs, keys, *sort_keys[1:]))
            ev_keys, ev_offs = keys[order2], offs[order2]
            ev_rows = np.column_stack((ev_offs, times[order2], amount[order2])).astype("<f8")
        cards, buckets, amount, times = cards[order], buckets[order], amount[order], times[order]
        card_new = np.empty(len(cards), bool)
        card_new[0] = True
        np.not_equal(cards[1:], cards[:-1], out=card_new[1:])
        pair_new = card_new.copy()
        pair_new[1:] |= buckets[1:] != buckets[:-1]
        pair_of = np.cumsum(pair_new) - 1
        card_at = np.flatnonzero(card_new)
        pair_at = np.flatnonzero(pair_new)
        uniq = cards[card_at]
        n_cards = len(uniq)
        latest = np.maximum.reduceat(times, card_at)
        sec = np.floor(latest)
        # floor(x + 0.5), not numpy's round-half-even: the script's rule for replays
        nanos = np.minimum(np.floor((latest - sec) * 1e6 + 0.5), 999_999) * 1000
        pairs_per_card = np.diff(np.append(pair_of[card_at], len(pair_at)))
        per_card = np.column_stack((sec, nanos, pairs_per_card)).astype("<f8")
        per_pair = np.column_stack(
            (
                buckets[pair_at],
                np.bincount(pair_of),
                np.bincount(pair_of, weights=amount),
            )
        ).astype("<f8")
        if ev_keys is not None and ev_offs is not None:
            part_blob, part_at = part_rows(card_new, ev_keys, ev_offs)
            ev_at = np.append(card_at, len(cards))
        keys_block = np.tile(self._keys_template, (n_cards, 1))
        ids = uniq.astype("<i8").view(np.uint8).reshape(-1, 8)
        for at in self._id_at:
            keys_block[:, at : at + 8] = ids
        first_pair = np.append(pair_of[card_at], len(pair_at))
        # chunk boundaries: every cards_per_script cards and at every change of group
        cuts = set(range(0, n_cards, self._chunk))
        card_group = None
        if g_sorted is not None:
            card_group = g_sorted[card_at]
            cuts.update(np.flatnonzero(np.diff(card_group)) + 1)
        bounds = [*sorted(cuts), n_cards]
        tail = _bulk(b"%d" % heal) + self._tail
        ev_bounds = np.append(card_at, len(cards))
        sha = self._sha.encode()
        commands = []
        for lo, hi in pairwise(bounds):
            if ev_keys is not None:
                parts = _bulk(part_blob[part_at[lo] : part_at[hi]].tobytes())
                events = _bulk(ev_rows[ev_at[lo] : ev_at[hi]].tobytes())
            else:
                parts = events = b"$0\r\n\r\n"
            n_keys = self._kpc * (hi - lo)
            commands.append(
                (
                    int(card_group[lo]) if card_group is not None else 0,
                    b"".join(
                        (
                            b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n"
                            % (3 + n_keys + self._n_args, sha),
                            _bulk(b"%d" % n_keys),
                            keys_block[lo:hi].tobytes(),
                            self._header,
                            _bulk(per_card[lo:hi].tobytes()),
                            _bulk(per_pair[first_pair[lo] : first_pair[hi]].tobytes()),
                            parts,
                            events,
                            tail,
                        )
                    ),
                    int(ev_bounds[hi] - ev_bounds[lo]),
                )
            )
        return commands

    def _update_cluster(
        self, ev: _Events, heal: int, dropped: int, refused: np.ndarray
    ) -> UpdateResult:
        """``update`` on Redis Cluster: chunks per slot, each script sent to its master."""
        assert self._cmap is not None
        cards = ev.cards
        uniq, inverse = np.unique(cards, return_inverse=True)
        block = np.tile(self._keys_template, (len(uniq), 1))
        at = self._id_at[0]
        block[:, at : at + 8] = uniq.astype("<i8").view(np.uint8).reshape(-1, 8)
        width = block.shape[1]
        key_len = len(self._prefix) + 8 + len(self._suffix)
        slots = key_slots(
            block.reshape(-1), np.arange(len(uniq)) * width + at - len(self._prefix),
            np.full(len(uniq), key_len),
        )
        commands = self._commands(ev, heal, slots[inverse])
        with self._lock:
            done = run_on_cluster(self._cmap, commands, self._script)
        applied = len(cards) - done.failed_events - done.skipped
        skipped = done.skipped + dropped
        if not done.failed_events:
            self.breaker.record_success()
            return UpdateResult(applied, done.cards, skipped=skipped, refused=refused)
        error = "; ".join(dict.fromkeys(done.errors))
        log.warning("velocity update: %d of %d events lost: %s", done.failed_events,
                    len(cards), error)
        if done.failed_events == len(cards):
            self.breaker.record_failure()
            return UpdateResult(0, 0, "unavailable", error, refused=refused)
        self.breaker.record_success()
        return UpdateResult(applied, done.cards, "partial", error, skipped, refused)

    def _send(self, commands: list[tuple[int, bytes, int]]) -> tuple[int, int]:
        """Pipeline the scripts on the updater's connection; load the script on NOSCRIPT.

        Returns (cards, events skipped as already applied)."""
        with self._lock:
            conn = self._conn
            try:
                return run_on_redis(conn, [c[1] for c in commands], self._script)
            except BaseException:
                conn.disconnect()  # unread replies may be in flight: start afresh next time
                raise

    def close(self) -> None:
        """Close the updater's Redis connections."""
        if self._cmap is not None:
            self._cmap.close()
            return
        self._conn.disconnect()
        self._pool.disconnect()


class _Events(NamedTuple):
    """One update's events after filtering; ``keys``/``offs``: partition keys, offsets."""

    cards: np.ndarray
    amount: np.ndarray
    times: np.ndarray
    keys: np.ndarray | None
    offs: np.ndarray | None


def state_field(view: str) -> bytes:
    """The Feast hash field holding a view's velocity state (when kept in the hash)."""
    return b"_vstate:" + view.encode("utf-8")
