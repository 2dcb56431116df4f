"""The server-side half of ``features.push``: the Lua script and the state format it keeps.

One EVALSHA per chunk of cards folds a batch into each card's window state (``ssvel:`` +
its Feast key) and writes the windows into the card's Feast hash (murmur3 field names,
Feast ``Value`` protobufs, the ``_ts`` Timestamp), atomically per script. The argument
layout is built by ``features.push.VelocityUpdater`` (the part blob by ``part_rows``);
the state format is below.
"""

import numpy as np

__all__ = ["SCRIPT", "part_rows"]

# KEYS: per card [feast key, state key], or [feast key] when the state is a field of the
# Feast hash (Redis Cluster: one key, one slot). ARGV: header, then blobs of packed
# little-endian float64 built by numpy (no per-event Python): per card [seconds, nanos,
# n_pairs]; all cards' pairs in card order, each [bucket, count, sum], buckets ascending;
# the parts: per card [n_parts, 0, 0, 0] then per input partition [key, lowest offset,
# highest offset, n_events] (empty: no offsets given, no replay check); the events, per
# card and partition in offset order, each [offset, time, amount]; then the heal bucket,
# bucket_s and the state's hash field ('' = the ``ssvel:`` key).
# Header: n_windows, ts_field, state_ttl, feast_key_ttl, then per window
# [buckets, count_field, count_tag, sum_field, sum_tag] (empty field = not requested).
# Returns {cards, events skipped as already applied}.
#
# State, format 3, struct-packed little-endian: a header
#   'W', n_windows (B), window signature (H), latest seconds (d), latest nanos (I),
#   newest bucket N (d), N's count (I) and sum (d), watermarks n_wm (H), then per window
#   its count (I), sum (d), then per input partition [key (d), highest offset applied (d)],
# followed by the older buckets still inside the longest window, oldest first, each
#   [N - bucket (I), count (I), sum (d)].
# Replays: a card's events of one partition are applied only past its watermark. A batch
# whose every partition starts past the watermark (the live stream) uses the client's
# pairs; otherwise the script rebuilds the pairs from the events past the watermarks.
# A state whose newest bucket lies beyond the heal bucket (now + twice the allowed
# event-time skew: written before that bound existed) loses its buckets, keeps its
# watermarks. Format 2 ('V', the same without watermarks) is read and rewritten as
# format 3.
# Why this shape (measured, see benchmarks/RESULTS.md): Redis' cost per card was mostly
# Lua work on the former cmsgpack table (a Lua table per bucket, a pairs() walk, cmsgpack
# pack of ~180 numbers) and Lua strings of ~1 KB made per card. Here the running window
# totals sit in the header, so a batch whose events all fall in the card's newest bucket
# (the usual case of a live stream: a busy card gets many events a minute) only rewrites
# the header (the buckets are copied as bytes); any other batch merges its sorted buckets with
# the sorted state in one pass, recomputing the totals from the buckets (no running
# subtraction, so no rounding drift). A format-1 state (cmsgpack array [sec, nanos,
# bucket, count, sum, ...], any bucket order) is read and rewritten as format 3, so a
# deployment's existing keys upgrade in place; an older script cannot read a newer format
# (its script fails with an error, counted as a failed update), so do not run workers of
# both versions on one Redis at once. Commands used: GET, SET, HGET, HSET, EXPIRE (the
# ACL in deploy/README.md, plus HGET when the state is kept in the hash).
SCRIPT = r"""
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
local n_win = tonumber(ARGV[1])
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
local card_blob, pair_blob, part_blob, event_blob = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
local heal, bucket_s, sfield = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), ARGV[a + 6]
-- the state in its own key (KEYS per card: feast key, state key) or in a field of the
-- Feast hash (KEYS per card: feast key): one key, one slot, for Redis Cluster
local kpc = sfield == '' and 2 or 1
local n_cards = #KEYS / kpc
local dedup = #part_blob > 0
local sat = 0
if kpc == 1 then args[#args + 1] = sfield; sat = #args + 1; args[#args + 1] = false end
local FIXED2 = '<BBHdIdId'
local FIXED = '<BBHdIdIdH'
local HFMT = FIXED .. rep('Id', n_win)
-- entries per struct call: Lua's C stack takes ~8,000 values (a 7 d window in minutes
-- is 10,080 buckets)
local BLOCK = 1000
local fmts = {}
local function efmt(k)
  local f = fmts[k]
  if not f then f = '<' .. rep('IId', k); fmts[k] = f end
  return f
end
local cp, pp, qp, ep, skipped = 1, 1, 1, 1, 0
local pb, tot, out = {}, {}, {}
for c = 1, n_cards do
  local fkey, skey = KEYS[kpc * (c - 1) + 1], KEYS[kpc * c]
  local sec, nanos, np_
  sec, nanos, np_, cp = sunpack('<ddd', card_blob, cp)
  for p = 3, 3 * np_, 3 do
    pb[p - 2], pb[p - 1], pb[p], pp = sunpack('<ddd', pair_blob, pp)
  end
  local raw
  if kpc == 2 then raw = call('GET', skey) else raw = call('HGET', fkey, sfield) end
  if raw == false then raw = nil end
  local fmt = raw and byte(raw, 1)
  local N, nN, sN, hn, hsig, tpos, body, ssec, snan = 0, 0, 0, 0, 0, 0, 0, 0, 0
  local wm, wkeys, known = {}, {}, false
  if fmt == 87 or fmt == 86 then
    known = true
    local _, hsec, hnan, nwm
    if fmt == 87 then
      _, hn, hsig, hsec, hnan, N, nN, sN, nwm, tpos = sunpack(FIXED, raw)
    else
      _, hn, hsig, hsec, hnan, N, nN, sN, tpos = sunpack(FIXED2, raw)
      nwm = 0
    end
    body = tpos + 12 * hn
    for i = 1, nwm do
      local k, o
      k, o, body = sunpack('<dd', raw, body)
      wm[k] = o; wkeys[i] = k
    end
    if N > heal then
      -- a state frozen by an event dated far ahead (before the skew bound existed): its
      -- buckets are dropped, its watermarks kept
      known = false; N = 0; nN = 0; sN = 0
    else
      ssec, snan = hsec, hnan
    end
  end
  -- replays: per input partition, the events at or below the card's watermark are
  -- already in the state; a batch wholly past every watermark uses its pairs as they are
  local apply = true
  if dedup then
    local n_parts, x
    n_parts, x, x, x, qp = sunpack('<dddd', part_blob, qp)
    local parts, fresh = {}, true
    for j = 1, n_parts do
      local k, lo, hi, ne
      k, lo, hi, ne, qp = sunpack('<dddd', part_blob, qp)
      parts[j] = {k, hi, ne}
      local w = wm[k]
      if w ~= nil and w >= lo then fresh = false end
    end
    if fresh then
      for j = 1, n_parts do
        local k = parts[j][1]
        if wm[k] == nil then wkeys[#wkeys + 1] = k end
        wm[k] = parts[j][2]
        ep = ep + 24 * parts[j][3]
      end
    else
      local agg, order, maxt = {}, {}, nil
      for j = 1, n_parts do
        local k, ne = parts[j][1], parts[j][3]
        local cur = wm[k]
        if cur == nil then cur = -1; wkeys[#wkeys + 1] = k end
        for e = 1, ne do
          local off, t, amt
          off, t, amt, ep = sunpack('<ddd', event_blob, ep)
          if off > cur then
            cur = off
            local b = floor(t / bucket_s)
            local g = agg[b]
            if g then g[1] = g[1] + 1; g[2] = g[2] + amt
            else agg[b] = {1, amt}; order[#order + 1] = b end
            if maxt == nil or t > maxt then maxt = t end
          else
            skipped = skipped + 1
          end
        end
        wm[k] = cur
      end
      np_ = #order
      if np_ == 0 then
        apply = false
      else
        table.sort(order)
        for p = 1, np_ do
          local g = agg[order[p]]
          pb[3 * p - 2], pb[3 * p - 1], pb[3 * p] = order[p], g[1], g[2]
        end
        -- the latest time of the events applied (the client's rule for seconds/nanos)
        sec = floor(maxt)
        nanos = math.min(floor((maxt - sec) * 1e6 + 0.5), 999999) * 1000
      end
    end
  end
  if ssec > sec or (ssec == sec and snan > nanos) then sec, nanos = ssec, snan end
  if apply then
    local wparts = {}
    for i = 1, #wkeys do wparts[i] = spack('<dd', wkeys[i], wm[wkeys[i]]) end
    local wbytes, nwm = table.concat(wparts), #wkeys
    local fast = false
    if known and hn == n_win and hsig == sig then
      -- fast when every event lands in bucket N or before every window (dropped)
      fast = true
      for p = 3, 3 * np_, 3 do
        local b = pb[p - 2]
        if b ~= N and b > N - longest then fast = false; break end
      end
    end
    local state
    if fast then
      local pos = tpos
      for w = 1, n_win do tot[2 * w - 1], tot[2 * w], pos = sunpack('<Id', raw, pos) end
      for p = 3, 3 * np_, 3 do
        if pb[p - 2] == N then
          local n, s = pb[p - 1], pb[p]
          nN = nN + n; sN = sN + s
          for w = 1, 2 * n_win, 2 do tot[w] = tot[w] + n; tot[w + 1] = tot[w + 1] + s end
        end
      end
      -- the buckets are copied as bytes; only the header and watermarks are rebuilt
      state = spack(HFMT, 87, n_win, sig, sec, nanos, N, nN, sN, nwm,
        unpack(tot, 1, 2 * n_win)) .. wbytes .. string.sub(raw, body)
    else
      -- the state's buckets as [N - bucket, count, sum] in t, oldest first, N itself last
      local t, k = nil, 0
      if known then
        k = (#raw - body + 1) / 16
        if k <= BLOCK then
          t = k > 0 and {sunpack(efmt(k), raw, body)} or {}
        else
          t = {}
          local at, done = body, 0
          while done < k do
            local m = math.min(BLOCK, k - done)
            local part = {sunpack(efmt(m), raw, at)}
            for x = 1, 3 * m do t[3 * done + x] = part[x] end
            at = part[3 * m + 1]; done = done + m
          end
        end
        t[3 * k + 1] = 0; t[3 * k + 2] = nN; t[3 * k + 3] = sN
        k = k + 1
      elseif raw and fmt ~= 87 and fmt ~= 86 then  -- format 1 (cmsgpack), buckets in any order
        local st = munpack(raw)
        if type(st) ~= 'table' then st = {0, 0} end
        local bs, at = {}, {}
        for i = 3, #st, 3 do bs[#bs + 1] = st[i]; at[st[i]] = i end
        table.sort(bs)
        k = #bs
        N = bs[k] or 0
        if N > heal then
          k = 0; N = 0
        elseif st[1] > sec or (st[1] == sec and st[2] > nanos) then
          sec, nanos = st[1], st[2]
        end
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
      state = spack(HFMT, 87, n_win, sig, sec, nanos, top, out[q - 1], out[q], nwm,
        unpack(tot, 1, 2 * n_win)) .. wbytes
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
    end
    if kpc == 2 then call('SET', skey, state, 'EX', state_ttl) else args[sat] = state end
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
end
return {n_cards, skipped}
"""


def part_rows(
    card_new: np.ndarray, keys: np.ndarray, offs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The part blob: per card a row [n_parts, 0, 0, 0], then per input partition of the
    card [key, lowest offset, highest offset, events] (events sorted by card, key, offset);
    and where each card's rows start (one more entry: the end)."""
    n = len(keys)
    run_new = card_new.copy()
    run_new[1:] |= keys[1:] != keys[:-1]
    runs = np.flatnonzero(run_new)
    lens = np.diff(np.append(runs, n))
    card_of_run = (np.cumsum(card_new) - 1)[runs]
    n_cards = int(card_new.sum())
    per_card = np.bincount(card_of_run, minlength=n_cards)
    header_at = np.arange(n_cards) + np.concatenate(([0], np.cumsum(per_card)[:-1]))
    rows = np.zeros((n_cards + len(runs), 4), dtype="<f8")
    rows[header_at, 0] = per_card
    rows[np.arange(len(runs)) + card_of_run + 1] = np.column_stack(
        (keys[runs], offs[runs], offs[runs + lens - 1], lens)
    )
    return rows, np.append(header_at, len(rows))
