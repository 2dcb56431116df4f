"""Pipelined HMGETs over a raw connection, replies decoded into float64 by one numba pass.

The online reader used to parse replies with hiredis into Python lists of bytes and then
decode those lists with numpy: at a batch of 64 that is ~150 reply objects, a list of
~1,500 values and a dozen numpy calls of fixed cost each, most of the read's CPU. Here the
bytes off the socket go into one reused uint8 buffer and a compiled pass walks the RESP
arrays and decodes every Feast ``Value`` (numbers, bools, unix timestamps), every
``Timestamp`` and every vocabulary string (to its code) into one flat float64 array, in
reply order, with no Python object per value. The pass is resumable: it stops at the first
incomplete reply and the next call (after another ``recv``) carries on from there, so a
large batch is parsed once whatever the chunking. The byte formats are those of
``features.layout`` (checked against Feast by the tests); ``decode_scalar`` /
``decode_timestamp`` there are the reference semantics this pass reproduces.

``spread`` is the reader's last step, also compiled: unique rows out to the batch's rows,
each view's TTL check, presence and age, straight into the result arrays (a dozen numpy
calls per view cost more than the whole read at small batches). ``Channel`` is the
transport around it: one redis-py connection (which does connecting,
AUTH, SELECT, TLS) whose socket is then used directly, every command sent at once and the
replies read under one deadline for the whole round trip.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from itertools import accumulate
from operator import mul
from typing import Any

import hiredis
import numba
import numpy as np
import redis

from features import jitcache

jitcache.configure()  # before the first kernel: numba reads its cache dir then

__all__ = [
    "DONE",
    "ERROR_REPLY",
    "MORE",
    "SLOT_NUMBER",
    "SLOT_STRING",
    "SLOT_TIMESTAMP",
    "UNEXPECTED",
    "Channel",
    "Vocabularies",
    "parse_hmget",
    "spread",
]

# what a reply slot holds
SLOT_NUMBER = 0  # a feast Value -> float64 (NaN for null, strings, lists)
SLOT_TIMESTAMP = 1  # a google.protobuf.Timestamp -> float seconds
SLOT_STRING = 2  # a string Value -> its vocabulary code (NaN if not in the vocabulary)

# parse_hmget's answer
MORE = 0  # need more bytes
DONE = 1  # every reply parsed
ERROR_REPLY = 2  # a Redis error reply starts at state[0]
UNEXPECTED = 3  # not an array of the expected width (protocol out of step)


class Vocabularies:
    """String vocabularies (serialized Value bytes -> code) packed for the compiled pass."""

    def __init__(self, lookups: Sequence[dict[bytes, float]]) -> None:
        blobs = [b for lk in lookups for b in lk]
        self.buf = np.frombuffer(b"".join(blobs) + b"\0", dtype=np.uint8)
        lens = np.array([len(b) for b in blobs], dtype=np.int64)
        self.start = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
        self.length = lens
        self.code = np.array([c for lk in lookups for c in lk.values()], dtype=np.float64)
        bounds = np.cumsum([0, *(len(lk) for lk in lookups)])
        self.lo = bounds[:-1].astype(np.int64)  # entries of vocabulary k: lo[k]..hi[k]
        self.hi = bounds[1:].astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _int_line(buf: np.ndarray, p: int, end: int) -> tuple[int, int]:
    """The signed integer from ``p`` up to CRLF; (value, position after CRLF) or (0, -1)."""
    neg = False
    if p < end and buf[p] == 45:  # '-'
        neg = True
        p += 1
    v = 0
    while p < end and buf[p] != 13:
        v = v * 10 + (buf[p] - 48)
        p += 1
    if p + 1 >= end:
        return 0, -1
    return (-v if neg else v), p + 2


@numba.njit(cache=True, nogil=True)
def _varint(buf: np.ndarray, p: int, stop: int) -> tuple[np.uint64, int]:
    v = np.uint64(0)
    shift = np.uint64(0)
    while p < stop:
        b = buf[p]
        p += 1
        if shift < 64:
            v |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            break
        shift += np.uint64(7)
    return v, p


@numba.njit(cache=True, nogil=True)
def parse_hmget(
    buf: np.ndarray,
    end: int,
    state: np.ndarray,
    group_stop: np.ndarray,
    group_width: np.ndarray,
    group_slot0: np.ndarray,
    slot_kind: np.ndarray,
    slot_vocab: np.ndarray,
    vbuf: np.ndarray,
    vstart: np.ndarray,
    vlen: np.ndarray,
    vcode: np.ndarray,
    vlo: np.ndarray,
    vhi: np.ndarray,
    out: np.ndarray,
) -> int:
    """Parse the HMGET replies in ``buf[state[0]:end]`` into ``out`` (flat, reply order).

    ``state`` = [byte position, replies done, values written], updated in place. Group g
    holds replies up to ``group_stop[g]`` (cumulative), each an array of
    ``group_width[g]`` values whose kinds are ``slot_kind[group_slot0[g]:+width]``.
    """
    s64 = np.zeros(1, dtype=np.uint64)
    f64 = s64.view(np.float64)
    s32 = np.zeros(1, dtype=np.uint32)
    f32 = s32.view(np.float32)
    pos, reply, o = state[0], state[1], state[2]
    total = group_stop[-1]
    g = 0
    while reply < total:
        while group_stop[g] <= reply:
            g += 1
        width = group_width[g]
        slot0 = group_slot0[g]
        if pos >= end:
            break
        if buf[pos] == 45:  # '-': an error reply
            state[0], state[1], state[2] = pos, reply, o
            return ERROR_REPLY
        if buf[pos] != 42:  # not '*'
            state[0], state[1], state[2] = pos, reply, o
            return UNEXPECTED
        n, p = _int_line(buf, pos + 1, end)
        if p < 0:
            break
        if n != width:
            state[0], state[1], state[2] = pos, reply, o
            return UNEXPECTED
        complete = True
        for k in range(width):
            if p >= end:
                complete = False
                break
            if buf[p] != 36:  # not '$'
                state[0], state[1], state[2] = pos, reply, o
                return UNEXPECTED
            size, q = _int_line(buf, p + 1, end)
            if q < 0:
                complete = False
                break
            kind = slot_kind[slot0 + k]
            val = np.nan
            if size < 0:  # nil: the hash or the field is missing
                p = q
            else:
                if q + size + 2 > end:
                    complete = False
                    break
                p = q + size + 2
                if kind == 0:
                    if size > 0:
                        tag = buf[q]
                        if tag == 0x29 and size == 9:  # double
                            u = np.uint64(0)
                            for i in range(8):
                                u |= np.uint64(buf[q + 1 + i]) << np.uint64(8 * i)
                            s64[0] = u
                            val = f64[0]
                        elif tag == 0x35 and size == 5:  # float
                            u32 = np.uint32(0)
                            for i in range(4):
                                u32 |= np.uint32(buf[q + 1 + i]) << np.uint32(8 * i)
                            s32[0] = u32
                            val = np.float64(f32[0])
                        elif tag == 0x18 or tag == 0x20 or tag == 0x38 or tag == 0x40:
                            # int32 is sign-extended to 64 bits on the wire: int64 is exact
                            v, _ = _varint(buf, q + 1, q + size)
                            val = np.float64(np.int64(v))
                elif kind == 1:
                    seconds = np.int64(0)
                    nanos = np.int64(0)
                    r = q
                    while r < q + size:
                        tag = buf[r]
                        v, r = _varint(buf, r + 1, q + size)
                        if tag == 0x08:
                            seconds = np.int64(v)
                        elif tag == 0x10:
                            nanos = np.int64(v)
                    val = np.float64(seconds) + nanos / 1e9
                else:
                    vk = slot_vocab[slot0 + k]
                    for e in range(vlo[vk], vhi[vk]):
                        if vlen[e] == size:
                            a = vstart[e]
                            same = True
                            for i in range(size):
                                if vbuf[a + i] != buf[q + i]:
                                    same = False
                                    break
                            if same:
                                val = vcode[e]
                                break
            out[o + k] = val
        if not complete:
            break
        o += width
        reply += 1
        pos = p
    state[0], state[1], state[2] = pos, reply, o
    return DONE if reply >= total else MORE


@numba.njit(cache=True, nogil=True)
def spread(
    numbers: np.ndarray,
    group_start: np.ndarray,
    group_width: np.ndarray,
    inverse: np.ndarray,
    view_group: np.ndarray,
    view_offset: np.ndarray,
    view_nfeat: np.ndarray,
    view_ttl: np.ndarray,
    view_col0: np.ndarray,
    cols: np.ndarray,
    now: float,
    values: np.ndarray,
    present: np.ndarray,
    stale: np.ndarray,
    age: np.ndarray,
) -> None:
    """Fill ``values`` (rows x features) and the per-view flags from the decoded replies.

    Row r of view j reads unique reply ``inverse[group, r]`` of its group; its features
    are the ``view_nfeat[j]`` values from ``view_offset[j]`` in that reply, then its
    timestamp. Older than a positive TTL: NaN values, ``stale``; no timestamp: not present.
    """
    n = values.shape[0]
    for j in range(len(view_group)):
        g = view_group[j]
        width = group_width[g]
        s0 = group_start[g]
        off = view_offset[j]
        nf = view_nfeat[j]
        ttl = view_ttl[j]
        c0 = view_col0[j]
        for r in range(n):
            base = s0 + inverse[g, r] * width + off
            ts = numbers[base + nf]
            a = now - ts
            old = ttl > 0 and a > ttl
            age[r, j] = a
            stale[r, j] = old
            present[r, j] = not np.isnan(ts) and not old
            for i in range(nf):
                values[r, cols[c0 + i]] = np.nan if old else numbers[base + i]


class Channel:
    """A redis-py connection used raw (callers hold a lock; one exchange at a time)."""

    def __init__(self, conn: Any, tables: tuple[np.ndarray, ...]) -> None:
        self.conn = conn
        self.tables = tables  # parse_hmget's group/slot/vocabulary arguments
        self._widths = tables[0].tolist()  # plain ints: numpy's fixed cost shows at 1 row
        self._buf = np.empty(1 << 16, dtype=np.uint8)  # replies land here (grown as needed)
        self._state = np.zeros(3, dtype=np.int64)

    def _socket(self, timeout: float) -> Any:
        sock: Any = self.conn._sock
        if sock is None:
            self.conn.connect()
            sock = self.conn._sock
        sock.settimeout(timeout)
        return sock

    def _failed(self, exc: BaseException) -> BaseException:
        """The error to raise for a broken exchange (unread replies may still be in
        flight: the connection cannot be reused)."""
        self.conn.disconnect()
        if isinstance(exc, socket.timeout):
            return redis.TimeoutError(str(exc) or "timed out")
        if isinstance(exc, OSError):
            return redis.ConnectionError(str(exc))
        return exc

    def floats(
        self, payload: bytes, counts: list[int], timeout: float, deadline: float
    ) -> np.ndarray:
        """Send ``payload``; the replies (``counts`` per group) decoded into one flat array."""
        t = self.tables
        stops = np.array(list(accumulate(counts)), dtype=np.int64)
        out = np.empty(sum(map(mul, counts, self._widths)))
        state = self._state
        state[:] = 0
        buf = self._buf
        filled = 0
        try:
            sock = self._socket(timeout)
            sock.sendall(payload)
            while True:
                if filled == len(buf):  # grow: keep what arrived, double the room
                    buf = self._buf = np.concatenate((buf, np.empty(len(buf), np.uint8)))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise redis.TimeoutError("deadline passed while reading replies")
                sock.settimeout(remaining)
                got = sock.recv_into(memoryview(buf)[filled:])  # type: ignore[arg-type]
                if not got:
                    raise redis.ConnectionError("Redis closed the connection")
                filled += got
                code = parse_hmget(buf, filled, state, stops, *t, out)  # type: ignore[call-arg]
                if code == DONE:
                    break
                if code != MORE:
                    raise _protocol_error(code, buf, int(state[0]), filled)
            sock.settimeout(timeout)
        except BaseException as exc:
            err = self._failed(exc)
            if err is exc:
                raise
            raise err from exc
        return out

    def objects(
        self, payload: bytes, count: int, timeout: float, deadline: float, errors: bool = False
    ) -> list[Any]:
        """Send ``payload``; ``count`` replies as Python objects parsed by hiredis (error
        replies raise, or with ``errors`` come back as exceptions in the list)."""
        try:
            sock = self._socket(timeout)
            sock.sendall(payload)
            reader = hiredis.Reader()
            replies: list[Any] = []
            while len(replies) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise redis.TimeoutError("deadline passed while reading replies")
                sock.settimeout(remaining)
                data = sock.recv(1 << 18)
                if not data:
                    raise redis.ConnectionError("Redis closed the connection")
                reader.feed(data)
                reply = reader.gets()
                while reply is not False:
                    replies.append(reply)
                    reply = reader.gets()
            sock.settimeout(timeout)
        except BaseException as exc:
            err = self._failed(exc)
            if err is exc:
                raise
            raise err from exc
        for reply in replies:
            if isinstance(reply, Exception) and not errors:
                raise redis.ResponseError(str(reply))
        return replies


def _protocol_error(code: int, buf: np.ndarray, pos: int, filled: int) -> Exception:
    line = bytes(buf[pos : min(filled, pos + 200)]).split(b"\r\n", 1)[0]
    if code == ERROR_REPLY:
        return redis.ResponseError(line[1:].decode("utf-8", "replace"))
    return redis.ConnectionError(f"unexpected reply from Redis: {line[:60]!r}")
