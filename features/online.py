"""The fast online reader: Feast-managed features from Redis in one pipelined round trip.

``OnlineReader`` reads the Feast repo once at start-up (project, views, join keys and
their types, feature value types, TTLs, the string vocabulary; the plan is built by
``features.readplan``) and prebuilds every byte it can: views with the same join keys
share one Feast hash, so they form one group read by one HMGET per entity, whose field
list, key prefix and suffix are RESP-encoded once. A ``read`` then deduplicates the
batch's entities per group, writes all HMGETs into one buffer, sends it on one
connection, and two compiled passes (``features.resp``) decode the replies straight from
the socket buffer and spread them into a float64 matrix in
``feature_refs`` order with per-view presence, staleness and age.

On Redis Cluster (the repo's ``redis_type: redis_cluster``) the HMGETs are routed per node
by their keys' slots and sent to every node at once (``features.fanout``), parsed by the
same compiled pass; redirects are followed within the read's deadline.

Faults never reach the caller: a Redis timeout (``timeout_ms``), a lost connection or an
open circuit breaker gives an all-NaN matrix with ``status`` saying why; on a cluster, rows
held by a node that is down get NaN and are flagged (``status`` ``"partial"``,
``unavailable``) while the others read normally; an unknown entity
gives NaN for its view with ``present`` False; a row older than its view's TTL is NaN and
flagged ``stale`` (Feast's own read path returns such rows as if fresh).

``read_dict`` returns exactly what ``FeatureStore.get_online_features(...).to_dict()``
returns, for the equality tests and checks; it is not the hot path.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

from features import fanout, layout, readplan, resp
from features.breaker import CircuitBreaker
from features.cluster import ClusterMap
from features.exceptions import FeatureRepoError

__all__ = ["OnlineReader", "ReadResult", "connection_pool"]

log = logging.getLogger(__name__)

# Below these sizes plain Python beats numpy's fixed cost per operation (measured with
# benchmarks/bench_features.py): small batches dedupe with a dict and decode value by value.
_SMALL_ROWS = 32
_COMMAND_CACHE = 50_000  # cached HMGET commands per view (~15 MB) before starting over


@dataclass
class ReadResult:
    """Features of one batch: ``values`` rows x feature_refs (NaN missing), flags per view.

    ``status`` is ``"ok"``, ``"timeout"``, ``"unavailable"`` (connection lost or refused),
    ``"circuit_open"`` (Redis skipped while the breaker is open), ``"error"``, or on Redis
    Cluster ``"partial"``: the rows in ``unavailable`` (a node down, a slot without a
    master, redirects that did not settle in time) are NaN, the others read normally.
    Otherwise, when it is not ``"ok"``, every value is NaN and ``error`` holds the reason.
    """

    values: np.ndarray
    present: np.ndarray  # bool rows x views: found and within TTL
    stale: np.ndarray  # bool rows x views: found but older than the view's TTL
    age: np.ndarray  # float seconds rows x views since the row's event time; NaN if not found
    views: tuple[str, ...]
    status: str = "ok"
    error: str | None = None
    unavailable: np.ndarray | None = None  # bool rows: not read (``"partial"`` only)

    @property
    def ok(self) -> bool:
        """True when Redis answered (entities may still be missing or stale)."""
        return self.status == "ok"

    @property
    def missing(self) -> np.ndarray:
        """bool rows x views: the entity has no row for that view at all."""
        return ~self.present & ~self.stale


def connection_pool(url: str, timeout_s: float) -> redis.ConnectionPool:
    """A redis-py pool whose connections time out after ``timeout_s`` (hiredis parser)."""
    return redis.ConnectionPool.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, max_connections=64
    )


class OnlineReader:
    """Reads ``feature_refs`` (``"view:feature"``) for batches of entities from Feast's Redis."""

    def __init__(
        self,
        repo_path: str | Path,
        feature_refs: Sequence[str],
        redis_url: str | None = None,
        *,
        timeout_ms: float = 20.0,
        breaker: CircuitBreaker | None = None,
        strict: bool = True,
    ) -> None:
        from features.repo import (
            check_online_store,
            load_vocab,
            open_store,
            redis_url_from_repo,
        )

        self.repo_path = Path(repo_path)
        self.feature_refs = tuple(feature_refs)
        if not self.feature_refs:
            raise FeatureRepoError("OnlineReader needs at least one feature reference")
        # an explicit URL (or REDIS_URL) overrides the repo's connection string, as Feast's
        # own; otherwise the repo's is used whole (every startup node of a cluster)
        url = redis_url or os.environ.get("REDIS_URL") or None
        self.redis_url = url or redis_url_from_repo(repo_path)
        self.timeout_ms = timeout_ms
        self.breaker = breaker or CircuitBreaker()
        store = open_store(repo_path, url)
        cluster_urls = check_online_store(store)
        self.project: str = store.config.project
        self._store = store
        vocab_file = self.repo_path / "vocab.json"
        vocab = load_vocab(repo_path) if vocab_file.exists() else {}
        self._views = readplan.plan_views(store, self.feature_refs, vocab, strict)
        self._groups = readplan.group_views(self._views, self.project)
        self._tables = readplan.slot_tables(self._views, self._groups)
        self._spread = readplan.spread_tables(self._views, self._groups)
        self.views = tuple(v.name for v in self._views)
        self.join_keys = tuple(dict.fromkeys(k for v in self._views for k in v.join_keys))
        # "int" or "str" per join key, as the Feast registry types it.
        self.join_key_kinds = {k: "int" if kind == layout.KIND_INT64 else "str"
                               for v in self._views
                               for k, kind in zip(v.join_keys, v.kinds, strict=True)}
        self._suffix = self.project.encode("utf-8")
        self._lock = threading.Lock()
        self._cluster: fanout.RoutedReads | None = None
        if cluster_urls is not None:
            cmap = ClusterMap(cluster_urls, timeout_ms / 1000.0)
            self._cluster = fanout.RoutedReads(cmap, self._groups, self._tables)
            return
        self._pool = connection_pool(self.redis_url, timeout_ms / 1000.0)
        # One connection of the reader's own, used under a lock: checking one out of the
        # pool per read costs more than the read itself for small batches.
        self._channel = resp.Channel(self._pool.make_connection(), self._tables)
        self.feature_names = tuple(ref.split(":", 1)[1] for ref in self.feature_refs)

    # ---- start-up -------------------------------------------------------------------------

    # ---- the hot path -----------------------------------------------------------------------

    def _group_keys(
        self, group: readplan.Group, entities: Mapping[str, Any], n: int, joined: bool = True
    ) -> tuple[Any, int, np.ndarray | None]:
        """RESP bytes of the group's HMGETs for the unique entities, their count, and row ->
        unique index (None when every row is its own unique entity, in order). Not
        ``joined``: the commands apart (a 2-D uint8 block, one row each, or a list)."""
        if group.template is not None and n > _SMALL_ROWS:
            ids = np.asarray(entities[group.join_keys[0]], dtype=np.int64)
            uniq, inverse = np.unique(ids, return_inverse=True)
            block = np.tile(group.template, (len(uniq), 1))
            at = group.id_at
            block[:, at : at + 8] = uniq.astype("<i8").view(np.uint8).reshape(-1, 8)
            return (block.tobytes() if joined else block), len(uniq), inverse
        columns = [entities[k] for k in group.join_keys]
        if len(columns) > 1:
            rows: Any = list(zip(*columns, strict=True))
        else:  # plain Python values hash and compare faster than numpy scalars
            rows = columns[0].tolist() if isinstance(columns[0], np.ndarray) else columns[0]
        index = dict.fromkeys(rows)
        # Whole HMGET commands are cached per entity: ids (cards, merchants, stores) recur
        # batch after batch, and a dict hit is far cheaper than encoding the key again.
        cache = group.commands
        get = cache.get
        parts = [get(r) or self._command(group, r) for r in index]
        if len(cache) > _COMMAND_CACHE:
            cache.clear()
        if len(index) == n:  # all distinct: rows in order map to themselves, no fan-out
            return (b"".join(parts) if joined else parts), n, None
        position = {r: i for i, r in enumerate(index)}
        mapping = np.fromiter(map(position.__getitem__, rows), np.int64, count=n)
        return (b"".join(parts) if joined else parts), len(index), mapping

    @staticmethod
    def _command(group: readplan.Group, entity: Any) -> bytes:
        key = group.key_fn(entity)
        cmd = b"".join((group.cmd_head, b"$%d\r\n" % len(key), key, b"\r\n", group.cmd_tail))
        group.commands[entity] = cmd
        return cmd

    def _roundtrip(self, payload: bytes, exchange: Any, arg: Any) -> Any:
        """Send every HMGET at once and read the replies back, under one deadline.

        redis-py's pooled connection does the connecting (AUTH, SELECT, TLS); the commands
        and replies go straight over its socket, and the whole round trip (not each recv)
        is bounded by ``timeout_ms``. ``exchange`` is ``self._channel.objects`` (Python
        objects, for ``read_dict``) or ``.floats`` (decoded floats, for ``read``).
        """
        timeout = self.timeout_ms / 1000.0
        deadline = time.monotonic() + timeout
        with self._lock:
            fresh = self._channel.conn._sock is None
            try:
                return exchange(payload, arg, timeout, deadline)
            except redis.ConnectionError:
                # A pooled connection can be stale (Redis restarted, idle timeout): retry
                # once on a new one if that is what failed and the deadline allows it.
                if fresh or time.monotonic() >= deadline:
                    raise
                return exchange(payload, arg, timeout, deadline)

    def _empty(self, n: int, status: str = "ok", error: str | None = None) -> ReadResult:
        nv = len(self._views)
        return ReadResult(
            values=np.full((n, len(self.feature_refs)), np.nan),
            present=np.zeros((n, nv), bool),
            stale=np.zeros((n, nv), bool),
            age=np.full((n, nv), np.nan),
            views=self.views,
            status=status,
            error=error,
        )

    def read(
        self, entities: Mapping[str, Sequence[Any] | np.ndarray], *, now: float | None = None
    ) -> ReadResult:
        """Features for ``entities`` (join key -> values, one per row); no raise on Redis faults."""
        missing = [k for k in self.join_keys if k not in entities]
        if missing:
            raise FeatureRepoError(f"entities lack join key(s): {', '.join(missing)}")
        n = len(entities[self.join_keys[0]])
        if n == 0:
            return self._empty(0)
        if not self.breaker.allow():
            return self._empty(n, "circuit_open", "Redis circuit breaker is open")
        if self._cluster is not None:
            return self._read_cluster(entities, n, time.time() if now is None else now)
        plans = [self._group_keys(g, entities, n) for g in self._groups]
        try:
            numbers = self._roundtrip(
                b"".join([p[0] for p in plans]), self._channel.floats, [p[1] for p in plans]
            )
        except redis.TimeoutError as exc:
            self.breaker.record_failure()
            return self._empty(n, "timeout", f"Redis timed out after {self.timeout_ms:g} ms: {exc}")
        except (redis.ConnectionError, OSError) as exc:
            self.breaker.record_failure()
            return self._empty(n, "unavailable", f"Redis unavailable: {exc}")
        except redis.RedisError as exc:
            self.breaker.record_failure()
            return self._empty(n, "error", f"Redis error: {exc}")
        self.breaker.record_success()
        return self._decode(numbers, plans, n, time.time() if now is None else now)

    def _read_cluster(self, entities: Mapping[str, Any], n: int, now: float) -> ReadResult:
        """``read`` on Redis Cluster: rows of a node that is down are flagged, not failed."""
        assert self._cluster is not None
        plans = [self._group_keys(g, entities, n, joined=False) for g in self._groups]
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        with self._lock:
            try:
                numbers, failed = self._cluster.floats([p[0] for p in plans], deadline)
            except redis.RedisError as exc:  # a reply out of protocol: nothing is trusted
                self.breaker.record_failure()
                return self._empty(n, "error", f"Redis error: {exc}")
        if failed.all():
            self.breaker.record_failure()
            return self._empty(n, "unavailable", "no Redis Cluster node answered in time")
        self.breaker.record_success()
        result = self._decode(numbers, plans, n, now)
        if failed.any():
            rows = np.zeros(n, dtype=bool)
            start = 0
            for count, inverse in ((p[1], p[2]) for p in plans):
                mine = failed[start : start + count]
                start += count
                rows |= mine if inverse is None else mine[inverse]
            result.values[rows] = np.nan
            result.present[rows] = False
            result.stale[rows] = False
            result.age[rows] = np.nan
            result.status = "partial"
            result.unavailable = rows
            result.error = f"{int(rows.sum())} of {n} rows on cluster nodes that did not answer"
        return result

    def _decode(
        self,
        numbers: np.ndarray,
        plans: list[tuple[bytes, int, np.ndarray | None]],
        n: int,
        now: float,
    ) -> ReadResult:
        """Per-view TTL checks and fan-out of the decoded unique rows to the batch's rows."""
        nv = len(self._views)
        result = ReadResult(
            values=np.empty((n, len(self.feature_refs))),
            present=np.empty((n, nv), bool),
            stale=np.empty((n, nv), bool),
            age=np.empty((n, nv)),
            views=self.views,
        )
        inverse = np.empty((len(plans), n), dtype=np.int64)
        starts = []
        start = 0
        for g, ((_, count, inv), group) in enumerate(zip(plans, self._groups, strict=True)):
            inverse[g] = np.arange(n) if inv is None else inv
            starts.append(start)
            start += count * group.width
        spread: Any = resp.spread  # numba dispatcher: mypy cannot see its signature
        spread(
            numbers,
            np.array(starts, dtype=np.int64),
            self._tables[0],
            inverse,
            *self._spread,
            now,
            result.values,
            result.present,
            result.stale,
            result.age,
        )
        return result

    # ---- the SDK-shaped read (tests and checks) ------------------------------------------------

    def read_dict(self, entity_rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """Exactly ``FeatureStore.get_online_features(features=feature_refs, entity_rows=...)
        .to_dict()``: join keys first, then each view's features in Feast's own order, Python
        values of Feast's types, None for missing. No TTL (Feast's read path has none);
        raises on Redis errors (this is for checks, not the worker)."""
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        n = len(entity_rows)
        keys = list(entity_rows[0]) if n else []
        out: dict[str, list[Any]] = {k: [row[k] for row in entity_rows] for k in keys}
        columns = {k: out[k] for k in self.join_keys if k in out}
        if self._cluster is not None:
            plans = [self._group_keys(g, columns, n, joined=False) for g in self._groups]
            timeout = self.timeout_ms / 1000.0
            with self._lock:
                replies = self._cluster.objects(
                    [p[0] for p in plans], timeout, time.monotonic() + timeout
                )
        else:
            plans = [self._group_keys(g, columns, n) for g in self._groups]
            replies = self._roundtrip(
                b"".join(p[0] for p in plans), self._channel.objects, sum(p[1] for p in plans)
            )
        start = 0
        for group, (_, count, inverse) in zip(self._groups, plans, strict=True):
            mine = replies[start : start + count]
            start += count
            for j, offset in zip(group.views, group.offsets, strict=True):
                view = self._views[j]
                # Feast groups a view's requested names in a set, so its column order is
                # that set's iteration order: rebuilding the set the same way reproduces it.
                order = list(set(view.features))
                position = {f: i for i, f in enumerate(view.features)}
                for feature in order:
                    i = offset + position[feature]
                    vtype = view.types[feature]
                    decoded = []
                    for reply in mine:
                        raw = reply[i]
                        decoded.append(
                            feast_value_type_to_python_type(Value.FromString(raw), vtype)
                            if raw
                            else None
                        )
                    out[feature] = decoded if inverse is None else [decoded[u] for u in inverse]
        return out

    def close(self) -> None:
        """Close the reader's Redis connections."""
        if self._cluster is not None:
            self._cluster.cmap.close()
            return
        self._channel.conn.disconnect()
        self._pool.disconnect()

    def __enter__(self) -> OnlineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
