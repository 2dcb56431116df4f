"""The server-side half of ``features.push``: the Lua script and the state format it keeps.

One EVALSHA per chunk of cards folds a batch into each card's window state (``ssvel:`` +
its Feast key) and writes the windows into the card's Feast hash (murmur3 field names,
Feast ``Value`` protobufs, the ``_ts`` Timestamp), atomically per script. The argument
layout is built by ``features.push.VelocityUpdater``; the state format is below.
"""

__all__ = ["SCRIPT"]

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
# the header (the buckets are copied as bytes); any other batch merges its sorted buckets with
# the sorted state in one pass, recomputing the totals from the buckets (no running
# subtraction, so no rounding drift). A format-1 state (cmsgpack array [sec, nanos,
# bucket, count, sum, ...], any bucket order) is read and rewritten as format 2, so a
# deployment's existing keys upgrade in place; a format-1 script cannot read format 2
# (its script fails with an error, counted as a failed update), so do not run workers of
# both versions on one Redis at once. Commands used: GET, SET, HSET, EXPIRE (the ACL in
# deploy/README.md).
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
    -- SETRANGE + EXPIRE of the header alone would save ~1-2 us per card on a live stream,
    -- but needs a command the documented ACL (deploy/README.md) does not grant
    call('SET', skey, head .. string.sub(raw, H + 1), 'EX', state_ttl)
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
