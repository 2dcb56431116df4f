"""Redis Cluster routing: the slot map, one raw connection per node, redirects, node faults.

Shared by the online reader (``features.online``) and the velocity updater
(``features.push``) when the Feast repo says ``redis_type: redis_cluster``. A key's slot is
CRC16 of the key (or of its ``{hash tag}``) mod 16384, computed in one compiled pass over
a batch's keys; the map from slot to master comes from ``CLUSTER SHARDS`` (Redis 7) or
``CLUSTER SLOTS`` on any node that answers, and is refreshed after a ``MOVED`` reply or a
node fault (at most every ``refresh_interval_s``). Each node has its own redis-py
connection (which does AUTH and TLS) and its own circuit breaker, so a dead master costs
the batch only the rows it holds.

``parse_redirect`` reads ``MOVED``/``ASK`` error lines; ``ClusterMap`` is the map and the
connections; the callers group their commands per node, send them to every node before
reading any reply, and follow redirects within their own deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numba
import numpy as np
import redis

from features import jitcache
from features.breaker import CircuitBreaker
from features.exceptions import FeatureRepoError

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = [
    "SLOTS",
    "ClusterMap",
    "Node",
    "cluster_urls",
    "key_slots",
    "parse_redirect",
]

log = logging.getLogger(__name__)

SLOTS = 16384


def _crc16_table() -> np.ndarray:
    # CRC-16/XMODEM (polynomial 0x1021), the one Redis Cluster hashes keys with
    table = np.zeros(256, dtype=np.uint16)
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table[i] = crc & 0xFFFF
    return table


_CRC16 = _crc16_table()


@numba.njit(cache=True, nogil=True)
def _slots(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, table: np.ndarray) -> np.ndarray:
    out = np.empty(len(starts), dtype=np.int64)
    for i in range(len(starts)):
        a = starts[i]
        b = a + lens[i]
        # a {hash tag}: only what lies between the first '{' and the next '}' is hashed,
        # when that is not empty
        for p in range(a, b):
            if buf[p] == 123:  # '{'
                for q in range(p + 1, b):
                    if buf[q] == 125:  # '}'
                        if q > p + 1:
                            a, b = p + 1, q
                        break
                break
        crc = 0
        for p in range(a, b):
            crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ buf[p]) & 0xFF]
        out[i] = crc & (SLOTS - 1)
    return out


def key_slots(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Cluster slot of each key ``buf[starts[i]:starts[i] + lens[i]]`` (uint8 buffer)."""
    return _slots(buf, starts.astype(np.int64), lens.astype(np.int64), _CRC16)  # type: ignore[no-any-return]


def parse_redirect(message: str) -> tuple[str, int, str] | None:
    """``("MOVED" | "ASK", slot, "host:port")`` from an error reply's text, else None."""
    parts = message.split()
    if len(parts) == 3 and parts[0] in ("MOVED", "ASK") and parts[1].isdigit():
        return parts[0], int(parts[1]), parts[2]
    return None


def cluster_urls(connection_string: str) -> list[str]:
    """Feast's cluster connection string (``host:port,host:port,password=..,ssl=true``) or a
    ``redis://`` URL as one ``redis[s]://`` URL per startup node, credentials included."""
    if "://" in connection_string:
        return [connection_string]
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    if not nodes:
        raise FeatureRepoError(f"no host:port in cluster connection string {connection_string!r}")
    scheme = "rediss" if str(params.get("ssl", "")).lower() == "true" else "redis"
    auth = ""
    if "password" in params:
        user = quote(str(params.get("username", "")), safe="")
        auth = f"{user}:{quote(str(params['password']), safe='')}@"
    return [f"{scheme}://{auth}{n['host']}:{n['port']}" for n in nodes]


@dataclass
class Node:
    """One cluster node: its address, raw connection and breaker."""

    addr: str  # host:port
    url: str
    timeout_s: float
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(1, 0.5))
    _conn: Any = None

    def connection(self) -> Any:
        """The node's redis-py connection (connected: AUTH, TLS), made on first use."""
        if self._conn is None:
            pool = redis.ConnectionPool.from_url(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
            )
            self._conn = pool.make_connection()
        if self._conn._sock is None:
            self._conn.connect()
        return self._conn

    def reset(self) -> None:
        """Drop the connection (unread replies may be in flight)."""
        if self._conn is not None:
            self._conn.disconnect()

    def call(self, *args: Any) -> Any:
        """One command and its reply (start-up and slot-map queries, not the hot path)."""
        conn = self.connection()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except BaseException:
            conn.disconnect()
            raise


class ClusterMap:
    """Which master serves each slot, and a ``Node`` per address (thread-safe refresh)."""

    def __init__(
        self, startup_urls: Sequence[str], timeout_s: float, *, refresh_interval_s: float = 0.1
    ) -> None:
        self.timeout_s = timeout_s
        self.refresh_interval_s = refresh_interval_s
        key_slots(np.zeros(1, np.uint8), np.zeros(1), np.ones(1))  # compiled now, not in a read
        first = redis.connection.parse_url(startup_urls[0])
        self._scheme = "rediss" if startup_urls[0].startswith("rediss://") else "redis"
        user, password = first.get("username"), first.get("password")
        self._auth = ""
        if password:
            self._auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
        self.nodes: list[Node] = []
        self._index: dict[str, int] = {}
        for url in startup_urls:
            info = redis.connection.parse_url(url)
            self.node(f"{info.get('host', '127.0.0.1')}:{info.get('port', 6379)}")
        self.owner = np.full(SLOTS, -1, dtype=np.int64)  # node index per slot, -1 unknown
        self._lock = threading.Lock()
        self._last_refresh = -1e9
        self.stale = True
        if not self.refresh(force=True):
            raise redis.ConnectionError(
                "no Redis Cluster node answered CLUSTER SHARDS/SLOTS: "
                + ", ".join(n.addr for n in self.nodes)
            )

    def node(self, addr: str) -> int:
        """Index of the node at ``host:port`` (added on first sight, e.g. from a redirect)."""
        i = self._index.get(addr)
        if i is None:
            i = self._index[addr] = len(self.nodes)
            self.nodes.append(Node(addr, f"{self._scheme}://{self._auth}{addr}", self.timeout_s))
        return i

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the slot map from the first node that answers; False if none did (the
        old map stays). Skipped when the last one is younger than ``refresh_interval_s``."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < self.refresh_interval_s:
                return False
            self._last_refresh = now
            # masters first: they are the likeliest to be up
            masters = set(self.owner.tolist())
            order = sorted(range(len(self.nodes)), key=lambda i: i not in masters)
            for i in order:
                node = self.nodes[i]
                try:
                    ranges = self._ranges(node)
                except (redis.RedisError, OSError) as exc:
                    log.debug("slot map from %s failed: %s", node.addr, exc)
                    continue
                owner = np.full(SLOTS, -1, dtype=np.int64)
                for lo, hi, addr in ranges:
                    if lo >= 0:
                        owner[lo : hi + 1] = self.node(addr)
                    else:  # a replica: known for the next refresh, serves no slot
                        self.node(addr)
                self.owner = owner
                self.stale = False
                return True
            return False

    def _ranges(self, node: Node) -> list[tuple[int, int, str]]:
        """(first slot, last slot, master host:port) from CLUSTER SHARDS or CLUSTER SLOTS."""
        host = node.addr.rsplit(":", 1)[0]
        try:
            shards = node.call("CLUSTER", "SHARDS")
        except redis.ResponseError:  # before Redis 7
            out = []
            for row in node.call("CLUSTER", "SLOTS"):
                ip = _text(row[2][0]) or host
                out.append((int(row[0]), int(row[1]), f"{ip}:{int(row[2][1])}"))
            return out
        out = []
        for shard in shards:
            info = _pairs(shard)
            master = None
            for n in info.get("nodes", []):
                d = _pairs(n)
                ip = _text(d.get("ip")) or _text(d.get("endpoint")) or host
                addr = f"{ip}:{int(d.get('port') or d.get('tls-port') or 0)}"
                if _text(d.get("role")) == "master" and _text(d.get("health")) != "fail":
                    master = addr
                elif _text(d.get("health")) == "online":
                    out.append((-1, -1, addr))
            slots = [int(s) for s in info.get("slots", [])]
            if master is None:
                continue
            for k in range(0, len(slots), 2):
                out.append((slots[k], slots[k + 1], master))
        return out

    def close(self) -> None:
        """Close every node's connection."""
        for node in self.nodes:
            node.reset()


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else ("" if v is None else str(v))


def _pairs(flat: Any) -> dict[str, Any]:
    if isinstance(flat, dict):
        return {_text(k): v for k, v in flat.items()}
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}
