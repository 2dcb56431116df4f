"""Streaming card velocity updates (count and sum over sliding windows) in Feast's layout.

Choice and why: the window state (per-minute buckets of count and sum plus the running
window totals, one small struct-packed string per card, layout next to ``_SCRIPT``) lives
in Redis, and a Lua script, run server side, folds each batch into it, computes the
windows and writes the view's features into the card's
Feast hash (murmur3 field names, Feast ``Value`` protobufs, ``_ts:view``), so
``get_online_features`` and ``OnlineReader`` read them like any pushed row. One pipelined
round trip per batch, no read-modify-write race between workers (each script runs
atomically), and no worker-local state to lose on a restart or a partition rebalance.
Going through Feast's push path instead costs a Python protobuf build per row plus a
timestamp read before every write (~8k rows/s here); this runs well above 40k rows/s
(see ``benchmarks/bench_features.py``).

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

from features import layout
from features.breaker import CircuitBreaker
from features.exceptions import FeatureRepoError

__all__ = ["UpdateResult", "VelocityUpdater", "parse_window"]

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW = re.compile(r"(count|sum)_(\d+)([smhd])$")
# Feast Value tag per feature type, as the Lua encoder needs it.
_TYPE_TAGS = {"INT64": 0x20, "INT32": 0x18, "DOUBLE": 0x29, "FLOAT": 0x35}

# KEYS: per card [feast key, state key]. ARGV: header, then two packed little-endian
# float64 blobs (built by numpy, no per-event Python): per card [seconds, nanos, n_pairs],
# then all cards' pairs in card order, each [bucket, count, sum], buckets ascending.
# Header: n_windows, ts_field, state_ttl, feast_key_ttl, then per window
# [buckets, count_field, count_tag, sum_field, sum_tag] (empty field = not requested).
#
# State (``ssvel:`` key), format 2, struct-packed little-endian: a header
#   'V', n_windows (B), window signature (H), latest seconds (d), latest nanos (I),
#   newest bucket N (d), N's count (I) and sum (d), then per window its count (I), sum (d)
# followed by the older buckets still inside the longest window, oldest first, each
#   [N - bucket (I), count (I), sum (d)].
# Why this shape (measured, see benchmarks/RESULTS.md): Redis' cost per card was mostly
# Lua work on the former cmsgpack table (a Lua table per bucket, a pairs() walk, cmsgpack
# pack of ~180 numbers) and Lua strings of ~1 KB made per card. Here the running window
# totals sit in the header, so a batch whose events all fall in the card's newest bucket
# (the usual case of a live stream: a busy card gets many events a minute) only rewrites
# the header in place (SETRANGE + EXPIRE); any other batch merges its sorted buckets with
# the sorted state in one pass, recomputing the totals from the buckets (no running
# subtraction, so no rounding drift). A format-1 state (cmsgpack array [sec, nanos,
# bucket, count, sum, ...], any bucket order) is read and rewritten as format 2, so a
# deployment's existing keys upgrade in place; a format-1 script cannot read format 2
# (its script fails with an error, counted as a failed update), so do not run workers of
# both versions on one Redis at once.
_SCRIPT = r"""
local floor, char, byte, rep = math.floor, string.char, string.byte, string.rep
local sunpack, spack, munpack, call = struct.unpack, struct.pack, cmsgpack.unpack, redis.call
-- protobuf varint, unrolled: a table and table.concat per value cost ~2 us per card
local function varint(v)
  if v < 128 then return char(v) end
  local b1 = v % 128 + 128
  v = floor(v / 128)
  if v < 128 then return char(b1, v) end
  local b2 = v % 128 + 128
  v = floor(v / 128)
  if v < 128 then return char(b1, b2, v) end
  local b3 = v % 128 + 128
  v = floor(v / 128)
  if v < 128 then return char(b1, b2, b3, v) end
  local b4 = v % 128 + 128
  v = floor(v / 128)
  if v < 128 then return char(b1, b2, b3, b4, v) end
  local out = {char(b1, b2, b3, b4)}
  while v >= 128 do
    out[#out + 1] = char(v % 128 + 128)
    v = floor(v / 128)
  end
  out[#out + 1] = char(v)
  return table.concat(out)
end
local function encode(tag, v)
  if tag == 41 then return '\41' .. spack('<d', v) end
  if tag == 53 then return '\53' .. spack('<f', v) end
  return char(tag) .. varint(v)
end
local n_cards, n_win = #KEYS / 2, tonumber(ARGV[1])
-- TTLs stay strings: a Lua number argument is formatted with sprintf on every call
local state_ttl, key_ttl = ARGV[3], ARGV[4]
local expire_key = tonumber(key_ttl) > 0
local wb, ctag, stag, cpos, spos = {}, {}, {}, {}, {}
local args = {false, ARGV[2], false}
local a, longest, sig = 5, 0, 0
for w = 1, n_win do
  wb[w] = tonumber(ARGV[a])
  if wb[w] > longest then longest = wb[w] end
  sig = (sig * 8191 + wb[w]) % 65536
  if ARGV[a + 1] ~= '' then
    args[#args + 1] = ARGV[a + 1]; ctag[w] = tonumber(ARGV[a + 2]); cpos[w] = #args + 1
    args[#args + 1] = false
  end
  if ARGV[a + 3] ~= '' then
    args[#args + 1] = ARGV[a + 3]; stag[w] = tonumber(ARGV[a + 4]); spos[w] = #args + 1
    args[#args + 1] = false
  end
  a = a + 5
end
local card_blob, pair_blob = ARGV[a], ARGV[a + 1]
local FIXED = '<BBHdIdId'
local HFMT = FIXED .. rep('Id', n_win)
local H = struct.size(HFMT)
-- entries per struct call: Lua's C stack takes ~8,000 values (a 7 d window in minutes
-- is 10,080 buckets)
local BLOCK = 1000
local fmts = {}
local function efmt(k)
  local f = fmts[k]
  if not f then f = '<' .. rep('IId', k); fmts[k] = f end
  return f
end
local cp, pp = 1, 1
local pb, tot, out = {}, {}, {}
for c = 1, n_cards do
  local fkey, skey = KEYS[2 * c - 1], KEYS[2 * c]
  local sec, nanos, np_
  sec, nanos, np_, cp = sunpack('<ddd', card_blob, cp)
  for p = 3, 3 * np_, 3 do
    pb[p - 2], pb[p - 1], pb[p], pp = sunpack('<ddd', pair_blob, pp)
  end
  local raw = call('GET', skey)
  local v2 = raw and byte(raw, 1) == 86
  local fast, N, nN, sN, hn, hsig, pos = false, 0, 0, 0, 0, 0, 1
  if v2 then
    local _, hsec, hnan
    _, hn, hsig, hsec, hnan, N, nN, sN, pos = sunpack(FIXED, raw)
    if hsec > sec or (hsec == sec and hnan > nanos) then sec, nanos = hsec, hnan end
    if hn == n_win and hsig == sig then
      -- fast when every event lands in bucket N or before every window (dropped)
      fast = true
      for p = 3, 3 * np_, 3 do
        local b = pb[p - 2]
        if b ~= N and b > N - longest then fast = false; break end
      end
    end
  end
  if fast then
    for w = 1, n_win do tot[2 * w - 1], tot[2 * w], pos = sunpack('<Id', raw, pos) end
    for p = 3, 3 * np_, 3 do
      if pb[p - 2] == N then
        local n, s = pb[p - 1], pb[p]
        nN = nN + n; sN = sN + s
        for w = 1, 2 * n_win, 2 do tot[w] = tot[w] + n; tot[w + 1] = tot[w + 1] + s end
      end
    end
    local head = spack(HFMT, 86, n_win, sig, sec, nanos, N, nN, sN, unpack(tot, 1, 2 * n_win))
    if #raw > 320 then  -- a busy card's long state: rewrite its header in place
      call('SETRANGE', skey, 0, head)
      call('EXPIRE', skey, state_ttl)
    else  -- a short one: one SET costs less than two calls
      call('SET', skey, head .. string.sub(raw, H + 1), 'EX', state_ttl)
    end
  else
    -- the state's buckets as [N - bucket, count, sum] in t, oldest first, N itself last
    local t, k = nil, 0
    if v2 then
      local h = hn == n_win and H or struct.size(FIXED .. rep('Id', hn))
      k = (#raw - h) / 16
      if k <= BLOCK then
        t = k > 0 and {sunpack(efmt(k), raw, h + 1)} or {}
      else
        t = {}
        local at, done = h + 1, 0
        while done < k do
          local m = math.min(BLOCK, k - done)
          local part = {sunpack(efmt(m), raw, at)}
          for x = 1, 3 * m do t[3 * done + x] = part[x] end
          at = part[3 * m + 1]; done = done + m
        end
      end
      t[3 * k + 1] = 0; t[3 * k + 2] = nN; t[3 * k + 3] = sN
      k = k + 1
    elseif raw then  -- format 1 (cmsgpack), buckets in any order
      local st = munpack(raw)
      if type(st) ~= 'table' then st = {0, 0} end
      if st[1] > sec or (st[1] == sec and st[2] > nanos) then sec, nanos = st[1], st[2] end
      local bs, at = {}, {}
      for i = 3, #st, 3 do bs[#bs + 1] = st[i]; at[st[i]] = i end
      table.sort(bs)
      k = #bs
      N = bs[k] or 0
      t = {}
      for i = 1, k do
        local j = at[bs[i]]
        t[3 * i - 2] = N - bs[i]; t[3 * i - 1] = st[j + 1]; t[3 * i] = st[j + 2]
      end
    end
    -- merge the sorted state with the sorted pairs; keep what the longest window holds
    local top = pb[3 * np_ - 2]
    if k > 0 and N > top then top = N end
    local lo = top - longest
    for w = 1, 2 * n_win do tot[w] = 0 end
    local q, i, p = 0, 1, 1
    while i <= k or p <= np_ do
      local eb = i <= k and N - t[3 * i - 2] or nil
      local b = p <= np_ and pb[3 * p - 2] or nil
      local n, s
      if b == nil or (eb ~= nil and eb < b) then
        b, n, s = eb, t[3 * i - 1], t[3 * i]; i = i + 1
      elseif eb == nil or b < eb then
        n, s = pb[3 * p - 1], pb[3 * p]; p = p + 1
      else
        n, s = t[3 * i - 1] + pb[3 * p - 1], t[3 * i] + pb[3 * p]; i = i + 1; p = p + 1
      end
      if b > lo then
        local d = top - b
        out[q + 1] = d; out[q + 2] = n; out[q + 3] = s; q = q + 3
        for w = 1, n_win do
          if d < wb[w] then tot[2 * w - 1] = tot[2 * w - 1] + n; tot[2 * w] = tot[2 * w] + s end
        end
      end
    end
    -- the newest bucket (top) is the last one kept: it goes into the header
    local state = spack(HFMT, 86, n_win, sig, sec, nanos, top, out[q - 1], out[q],
      unpack(tot, 1, 2 * n_win))
    local m = q / 3 - 1
    if m > 0 and m <= BLOCK then
      state = state .. spack(efmt(m), unpack(out, 1, 3 * m))
    elseif m > 0 then
      local parts = {state}
      for done = 0, m - 1, BLOCK do
        local e = math.min(BLOCK, m - done)
        parts[#parts + 1] = spack(efmt(e), unpack(out, 3 * done + 1, 3 * (done + e)))
      end
      state = table.concat(parts)
    end
    call('SET', skey, state, 'EX', state_ttl)
  end
  local ts = (sec > 0 and ('\8' .. varint(sec)) or '')
  if nanos > 0 then ts = ts .. '\16' .. varint(nanos) end
  args[1] = fkey; args[3] = ts
  for w = 1, n_win do
    if cpos[w] then args[cpos[w]] = encode(ctag[w], tot[2 * w - 1]) end
    if spos[w] then args[spos[w]] = encode(stag[w], tot[2 * w]) end
  end
  call('HSET', unpack(args))
  if expire_key then call('EXPIRE', fkey, key_ttl) end
end
return n_cards
"""


def _bulk(raw: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def parse_window(feature: str) -> tuple[str, int] | None:
    """``("count" | "sum", seconds)`` from a feature name like ``velocity_sum_10m``."""
    m = _WINDOW.search(feature)
    return (m.group(1), int(m.group(2)) * _UNITS[m.group(3)]) if m else None


@dataclass
class UpdateResult:
    """Outcome of one ``update``: rows applied and ``status`` (``ok``, ``timeout``,
    ``unavailable``, ``circuit_open`` or ``error``)."""

    rows: int
    cards: int
    status: str = "ok"
    error: str | None = None


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
    ) -> None:
        from features.online import connection_pool
        from features.repo import open_store, redis_url_from_repo

        url = redis_url or os.environ.get("REDIS_URL") or redis_url_from_repo(repo_path)
        store = open_store(repo_path, url)
        views = {fv.name: fv for fv in store.list_feature_views()}
        if view not in views:
            raise FeatureRepoError(f"feature repo {repo_path} has no view {view!r}")
        fv = views[view]
        entity_cols = list(fv.entity_columns)
        if len(entity_cols) != 1 or entity_cols[0].dtype.to_value_type().name != "INT64":
            raise FeatureRepoError(f"view {view} must have exactly one int64 join key")
        self.join_key = entity_cols[0].name
        self.bucket_s = int(bucket_s)
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
            field = layout.field_name(view, f.name).decode("latin-1")
            slot[0 if kind == "count" else 2] = field
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
        self._n_args = len(header) + 2  # the header, then the cards and pairs blobs
        suffix = store.config.project.encode("utf-8")
        prefix = layout.entity_key([self.join_key], [layout.KIND_INT64], [0])[:-8]
        # one card's two keys in RESP with the 8 id bytes zeroed: filled in by numpy
        key_len = len(prefix) + 8 + len(suffix)
        first = b"$%d\r\n" % key_len + prefix
        second = b"\r\n$%d\r\nssvel:" % (key_len + 6) + prefix
        self._id_at = (len(first), len(first) + 8 + len(suffix) + len(second))
        self._keys_template = np.frombuffer(
            first + bytes(8) + suffix + second + bytes(8) + suffix + b"\r\n", np.uint8
        )
        self._script = _SCRIPT
        self._sha = hashlib.sha1(_SCRIPT.encode("utf-8"), usedforsecurity=False).hexdigest()
        self._pool = connection_pool(url, timeout_ms / 1000.0)
        # One connection of the updater's own, used under a lock (see OnlineReader).
        self._conn: Any = self._pool.make_connection()
        self._lock = threading.Lock()
        self._chunk = int(cards_per_script)
        self.breaker = breaker or CircuitBreaker()

    def update(
        self,
        card_ids: Sequence[int] | np.ndarray,
        amounts: Sequence[float] | np.ndarray,
        event_times: Sequence[float] | np.ndarray,
    ) -> UpdateResult:
        """Add one batch of events (event times in unix seconds); never raises on Redis faults.

        On a timeout the batch's scripts may still have run (Redis got them): a failed
        update is reported, not retried, so windows may miss (never double-count) events.
        """
        cards = np.asarray(card_ids, dtype=np.int64)
        amount = np.asarray(amounts, dtype=np.float64)
        times = np.asarray(event_times, dtype=np.float64)
        if not (len(cards) == len(amount) == len(times)):
            raise ValueError("card_ids, amounts and event_times must have the same length")
        if len(cards) == 0:
            return UpdateResult(0, 0)
        if not self.breaker.allow():
            return UpdateResult(0, 0, "circuit_open", "Redis circuit breaker is open")
        # a missing or non-finite amount still counts as an event but adds nothing to sums
        amount = np.where(np.isfinite(amount), amount, 0.0)
        keep = np.isfinite(times)  # an event without a usable time cannot be bucketed
        if not keep.all():
            cards, amount, times = cards[keep], amount[keep], times[keep]
            if len(cards) == 0:
                return UpdateResult(0, 0)
        try:
            n_cards = self._send(self._commands(cards, amount, times))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self.breaker.record_failure()
            log.warning("velocity update of %d events lost: %s", len(cards), exc)
            status = "timeout" if isinstance(exc, redis.TimeoutError) else "unavailable"
            return UpdateResult(0, 0, status, str(exc))
        except redis.RedisError as exc:  # e.g. a key of the wrong type: Redis is up
            log.warning("velocity update of %d events failed: %s", len(cards), exc)
            return UpdateResult(0, 0, "error", str(exc))
        self.breaker.record_success()
        return UpdateResult(len(cards), n_cards)

    def _commands(self, cards: np.ndarray, amount: np.ndarray, times: np.ndarray) -> list[bytes]:
        """One EVALSHA per chunk of cards, RESP-encoded by numpy (no per-event Python)."""
        buckets = np.floor(times / self.bucket_s).astype(np.int64)
        # sort by (card, bucket): each (card, bucket) pair, and each card, is then one run
        order = np.lexsort((buckets, cards))
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
        latest = np.maximum.reduceat(times, card_at)
        sec = np.floor(latest)
        nanos = np.minimum(np.round((latest - sec) * 1e6), 999_999) * 1000
        pairs_per_card = np.diff(np.append(pair_of[card_at], len(pair_at)))
        per_card = np.column_stack((sec, nanos, pairs_per_card)).astype("<f8")
        per_pair = np.column_stack(
            (
                buckets[pair_at],
                np.bincount(pair_of),
                np.bincount(pair_of, weights=amount),
            )
        ).astype("<f8")
        keys = np.tile(self._keys_template, (len(uniq), 1))
        ids = uniq.astype("<i8").view(np.uint8).reshape(-1, 8)
        a, b = self._id_at
        keys[:, a : a + 8] = ids
        keys[:, b : b + 8] = ids
        first_pair = np.append(pair_of[card_at], len(pair_at))
        commands = []
        for lo in range(0, len(uniq), self._chunk):
            hi = min(lo + self._chunk, len(uniq))
            n_keys = b"%d" % (2 * (hi - lo))
            commands.append(
                b"".join(
                    (
                        b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n"
                        % (3 + 2 * (hi - lo) + self._n_args, self._sha.encode()),
                        _bulk(n_keys),
                        keys[lo:hi].tobytes(),
                        self._header,
                        _bulk(per_card[lo:hi].tobytes()),
                        _bulk(per_pair[first_pair[lo] : first_pair[hi]].tobytes()),
                    )
                )
            )
        return commands

    def _send(self, commands: list[bytes]) -> int:
        """Pipeline the scripts on the updater's connection; load the script on NOSCRIPT."""
        with self._lock:
            conn = self._conn
            try:
                done = 0
                pending = commands
                for attempt in range(2):
                    conn.send_packed_command(pending)
                    failed, error = [], None
                    for command in pending:
                        try:
                            done += int(conn.read_response())
                        except redis.exceptions.NoScriptError:
                            failed.append(command)
                        except redis.ResponseError as exc:  # read on: stay in step
                            error = error or exc
                    if error is not None:
                        raise error
                    if not failed or attempt:
                        break
                    conn.send_command("SCRIPT", "LOAD", self._script)
                    conn.read_response()
                    pending = failed
                if failed:
                    raise redis.ResponseError("velocity script missing after SCRIPT LOAD")
                return done
            except BaseException:
                conn.disconnect()  # unread replies may be in flight: start afresh next time
                raise

    def close(self) -> None:
        """Close the updater's Redis connections."""
        self._conn.disconnect()
        self._pool.disconnect()
