"""Reads on Redis Cluster: one pipelined round trip per node, all nodes at once.

``RoutedReads`` groups the reader's HMGETs per node by their keys' slots, follows
``MOVED`` (the slot map is patched at once and refreshed on the next read) and ``ASK``
(that key alone, after ``ASKING``) within the read's deadline, and reports the commands it
could not read (node down, redirects unsettled) so their rows are flagged, never filled.

``fetch`` writes every node's HMGETs before reading any reply, then reads whichever
socket is ready until each node's replies are parsed by ``features.resp.parse_hmget``
(the single-Redis path's compiled pass, resumable across ``recv`` calls), the node fails,
or the read's deadline passes. A reply that is not an array stops the compiled pass; it is
handled here in Python (rare: redirects while slots migrate): an error reply is recorded
for its command (``NodeJob.errors``) and its values left NaN, and the ``+OK`` of an
``ASKING`` prefix is skipped. A node that cannot be reached, closes the connection or
misses the deadline fails its job (``NodeJob.failed``), never the others.
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from features import resp
from features.cluster import ClusterMap, key_slots, parse_redirect

__all__ = ["ASKING", "NodeJob", "RoutedReads", "fetch"]

ASKING = b"*1\r\n$6\r\nASKING\r\n"


@dataclass
class NodeJob:
    """One node's share of a read: its commands (indices into the caller's list), the
    RESP bytes, replies per group (cumulative), and what came back."""

    node: int
    commands: np.ndarray  # int64 indices, in send order
    payload: bytes
    stops: np.ndarray  # cumulative replies per group (parse_hmget's group_stop)
    n_values: int
    out: np.ndarray = field(default_factory=lambda: np.zeros(0))
    errors: list[tuple[int, str]] = field(default_factory=list)  # (reply index, error text)
    failed: BaseException | None = None
    _buf: Any = None
    _filled: int = 0
    _state: Any = None


def _advance(job: NodeJob, tables: tuple[np.ndarray, ...]) -> bool:
    """Parse what arrived; True when every reply is in."""
    widths = tables[0]
    while True:
        code = resp.parse_hmget(job._buf, job._filled, job._state, job.stops, *tables, job.out)  # type: ignore[call-arg]
        if code == resp.DONE:
            return True
        if code == resp.MORE:
            return False
        pos = int(job._state[0])
        line_end = bytes(job._buf[pos : job._filled]).find(b"\r\n")
        if line_end < 0:
            return False  # the rest of the line is still in flight
        line = bytes(job._buf[pos : pos + line_end])
        job._state[0] = pos + line_end + 2
        if line[:1] == b"+":  # the OK of an ASKING prefix
            continue
        if line[:1] != b"-":
            raise redis.ConnectionError(f"unexpected reply from Redis: {line[:60]!r}")
        reply = int(job._state[1])
        width = int(widths[int(np.searchsorted(job.stops, reply, side="right"))])
        at = int(job._state[2])
        job.out[at : at + width] = np.nan
        job.errors.append((reply, line[1:].decode("utf-8", "replace")))
        job._state[1] = reply + 1
        job._state[2] = at + width


def _fail(cmap: ClusterMap, job: NodeJob, exc: BaseException) -> None:
    node = cmap.nodes[job.node]
    node.reset()
    node.breaker.record_failure()
    cmap.stale = True
    job.failed = exc


def fetch(
    cmap: ClusterMap, jobs: list[NodeJob], tables: tuple[np.ndarray, ...], deadline: float
) -> None:
    """Run every job: send all payloads, then read all replies (under ``deadline``)."""
    sel = selectors.DefaultSelector()
    try:
        for job in jobs:
            node = cmap.nodes[job.node]
            job.out = np.empty(job.n_values)
            if not node.breaker.allow():
                job.failed = redis.ConnectionError(f"{node.addr}: circuit breaker open")
                cmap.stale = True  # its slots may have a new master by now
                continue
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise redis.TimeoutError("deadline passed before sending")
                sock = node.connection()._sock
                sock.settimeout(remaining)
                sock.sendall(job.payload)
            except (OSError, redis.RedisError) as exc:
                _fail(cmap, job, exc)
                continue
            job._buf = np.empty(max(1 << 16, 2 * len(job.payload)), dtype=np.uint8)
            job._state = np.zeros(3, dtype=np.int64)
            sel.register(sock, selectors.EVENT_READ, job)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for key in list(sel.get_map().values()):
                    sel.unregister(key.fileobj)
                    _fail(cmap, key.data, redis.TimeoutError("deadline passed reading replies"))
                break
            for key, _ in sel.select(remaining):
                job, sock = key.data, key.fileobj
                try:
                    done = _receive(job, sock, tables)
                except (OSError, redis.RedisError) as exc:
                    sel.unregister(sock)
                    _fail(cmap, job, exc)
                    continue
                if done:
                    sel.unregister(sock)
                    cmap.nodes[job.node].breaker.record_success()
    finally:
        sel.close()


def _receive(job: NodeJob, sock: Any, tables: tuple[np.ndarray, ...]) -> bool:
    """Read what the socket has (TLS: what it buffered too) and parse it."""
    while True:
        if job._filled == len(job._buf):
            job._buf = np.concatenate((job._buf, np.empty(len(job._buf), np.uint8)))
        try:
            got = sock.recv_into(memoryview(job._buf)[job._filled :])
        except TimeoutError as exc:
            raise redis.TimeoutError(str(exc) or "timed out") from exc
        if not got:
            raise redis.ConnectionError("Redis closed the connection")
        job._filled += got
        pending = getattr(sock, "pending", None)
        if not (pending and pending()):
            break
    return _advance(job, tables)


class RoutedReads:
    """The reader's HMGETs on a cluster: routed by slot, redirects followed, faults per row.

    ``floats`` is the hot path (the compiled parser, every node at once); ``objects`` the
    SDK-shaped one (hiredis objects, node by node) used by ``read_dict``.
    """

    def __init__(self, cmap: ClusterMap, groups: list[Any], tables: tuple[np.ndarray, ...]):
        self.cmap = cmap
        self.tables = tables
        self.widths = tables[0]
        self.n_groups = len(groups)
        self._heads = [len(g.cmd_head) for g in groups]
        self._slot_cache: list[dict[bytes, int]] = [{} for _ in groups]
        self._key_at: list[tuple[int, int]] = []  # template path: (key offset, key length)
        for g in groups:
            if g.template is None:
                self._key_at.append((0, 0))
                continue
            raw = g.template.tobytes()
            p = len(g.cmd_head)
            e = raw.index(b"\r\n", p)
            self._key_at.append((e + 2, int(raw[p + 1 : e])))

    def _slots(self, g: int, pieces: Any) -> np.ndarray:
        """The slot of each command's key in group ``g`` (a 2-D block or a list)."""
        if isinstance(pieces, np.ndarray):
            at, length = self._key_at[g]
            rows, width = pieces.shape
            flat = np.ascontiguousarray(pieces).reshape(-1)
            return key_slots(flat, np.arange(rows) * width + at, np.full(rows, length))
        cache = self._slot_cache[g]
        head = self._heads[g]
        out = np.empty(len(pieces), dtype=np.int64)
        for i, cmd in enumerate(pieces):
            slot = cache.get(cmd)
            if slot is None:
                e = cmd.index(b"\r\n", head)
                key = cmd[e + 2 : e + 2 + int(cmd[head + 1 : e])]
                slot = cache[cmd] = int(key_slots(np.frombuffer(key, np.uint8),
                                                  np.zeros(1), np.full(1, len(key)))[0])
            out[i] = slot
        if len(cache) > 100_000:
            cache.clear()
        return out

    def _flatten(self, pieces: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Slot and group of every command (group-major), and where each group starts."""
        slots = [self._slots(g, p) for g, p in enumerate(pieces)]
        counts = [len(s) for s in slots]
        gids = np.repeat(np.arange(len(pieces)), counts)
        return np.concatenate(slots), gids, np.concatenate(([0], np.cumsum(counts)))

    @staticmethod
    def _payload(
        pieces: list[Any], mine: np.ndarray, gids: np.ndarray, first: np.ndarray,
        ask: Mapping[int, int],
    ) -> bytes:
        """The RESP bytes of commands ``mine`` (sorted), ASKING before those in ``ask``."""
        parts = []
        for g in np.unique(gids[mine]).tolist():
            local = mine[gids[mine] == g] - first[g]
            p = pieces[g]
            if ask:
                sent = mine[gids[mine] == g]
                for j, k in zip(sent.tolist(), local.tolist(), strict=True):
                    cmd = p[k].tobytes() if isinstance(p, np.ndarray) else p[k]
                    parts.append(ASKING + cmd if j in ask else cmd)
            elif isinstance(p, np.ndarray):
                parts.append(p[local].tobytes())
            else:
                parts.extend(p[k] for k in local.tolist())
        return b"".join(parts)

    def floats(self, pieces: list[Any], deadline: float) -> tuple[np.ndarray, np.ndarray]:
        """Replies decoded like ``Channel.floats`` (NaN where unread), and a bool per
        command: its node failed, or its redirects did not settle before ``deadline``."""
        slots, gids, first = self._flatten(pieces)
        width = self.widths[gids]
        dest = np.concatenate(([0], np.cumsum(width)[:-1])).astype(np.int64)
        numbers = np.full(int(width.sum()), np.nan)
        failed = np.zeros(len(slots), dtype=bool)
        cmap = self.cmap
        if cmap.stale:
            cmap.refresh()
        pending = np.arange(len(slots))
        ask: dict[int, int] = {}
        for _ in range(5):  # redirects of a slot being moved settle in one or two turns
            if not len(pending) or time.monotonic() >= deadline:
                break
            owner = cmap.owner[slots[pending]]
            for j, node in ask.items():
                owner[np.searchsorted(pending, j)] = node
            if (owner < 0).any():  # no master known for the slot (a failover under way)
                failed[pending[owner < 0]] = True
                cmap.stale = True
            jobs = []
            for node in np.unique(owner[owner >= 0]).tolist():
                mine = pending[owner == node]
                payload = self._payload(pieces, mine, gids, first, ask)
                stops = np.searchsorted(gids[mine], np.arange(self.n_groups), side="right")
                jobs.append(NodeJob(node, mine, payload, stops.astype(np.int64),
                                    int(width[mine].sum())))
            ask = {}
            fetch(cmap, jobs, self.tables, deadline)
            retry: list[int] = []
            for job in jobs:
                mine = job.commands
                if job.failed is not None:
                    failed[mine] = True
                    continue
                w = width[mine]
                starts = np.concatenate(([0], np.cumsum(w)[:-1]))
                numbers[np.repeat(dest[mine] - starts, w) + np.arange(job.n_values)] = job.out
                for reply, text in job.errors:
                    j = int(mine[reply])
                    if not self._redirect(j, slots[j], text, ask):
                        failed[j] = True
                        continue
                    retry.append(j)
            pending = np.array(sorted(retry), dtype=np.int64)
        failed[pending] = True
        numbers[np.repeat(failed, width)] = np.nan
        return numbers, failed

    def _redirect(self, j: int, slot: int, text: str, ask: dict[int, int]) -> bool:
        """Follow a MOVED (the slot map is patched, then refreshed on the next read) or an
        ASK (this key alone goes to that node, after ASKING); False for other errors."""
        found = parse_redirect(text)
        if found is None:
            return False
        kind, moved_slot, addr = found
        target = self.cmap.node(addr)
        if kind == "MOVED":
            self.cmap.owner[moved_slot] = target
            self.cmap.stale = True
        else:
            ask[j] = target
        return True

    def objects(self, pieces: list[Any], timeout: float, deadline: float) -> list[Any]:
        """Every reply as hiredis objects, in command order (raises if one cannot be read)."""
        slots, gids, first = self._flatten(pieces)
        replies: list[Any] = [None] * len(slots)
        pending = list(range(len(slots)))
        ask: dict[int, int] = {}
        self.cmap.refresh(force=True)
        for _ in range(5):
            if not pending:
                break
            by_node: dict[int, list[int]] = {}
            for j in pending:
                by_node.setdefault(ask.get(j, int(self.cmap.owner[slots[j]])), []).append(j)
            asked, ask, retry = ask, {}, []
            for node, mine in by_node.items():
                if node < 0:
                    raise redis.ConnectionError("no master serves a slot of this read")
                channel = resp.Channel(self.cmap.nodes[node].connection(), self.tables)
                got = channel.objects(
                    self._payload(pieces, np.array(mine, dtype=np.int64), gids, first, asked),
                    len(mine) + sum(j in asked for j in mine), timeout, deadline, errors=True,
                )
                got = [r for r in got if r != b"OK"]
                for j, reply in zip(mine, got, strict=True):
                    if isinstance(reply, Exception):
                        if not self._redirect(j, slots[j], str(reply), ask):
                            raise redis.ResponseError(str(reply))
                        retry.append(j)
                    else:
                        replies[j] = reply
            pending = sorted(retry)
        if pending:
            raise redis.ResponseError("redirects did not settle")
        return replies
