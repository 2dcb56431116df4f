"""The velocity script of format 1 (cmsgpack state), verbatim as features.push had it up
to commit e6ffbcf: the reference the format-2 script is compared with, and the writer of
the format-1 keys a running deployment holds when it upgrades."""

__all__ = ["LEGACY_SCRIPT"]

LEGACY_SCRIPT = r"""
local function varint(v)
  local out = {}
  while v >= 128 do
    out[#out + 1] = string.char(v % 128 + 128)
    v = math.floor(v / 128)
  end
  out[#out + 1] = string.char(v)
  return table.concat(out)
end
local function encode(tag, v)
  tag = tonumber(tag)
  if tag == 41 then return '\41' .. struct.pack('<d', v) end
  if tag == 53 then return '\53' .. struct.pack('<f', v) end
  return string.char(tag) .. varint(v)
end
local n_cards, n_win = #KEYS / 2, tonumber(ARGV[1])
local ts_field, state_ttl, key_ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local win = {}
local a = 5
local longest = 0
for w = 1, n_win do
  win[w] = {tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]}
  if win[w][1] > longest then longest = win[w][1] end
  a = a + 5
end
local card_blob, pair_blob = ARGV[a], ARGV[a + 1]
local cp, pp = 1, 1
for c = 1, n_cards do
  local fkey, skey = KEYS[2 * c - 1], KEYS[2 * c]
  local sec, nanos, n_pairs
  sec, nanos, n_pairs, cp = struct.unpack("<ddd", card_blob, cp)
  -- state: msgpack {latest seconds, latest nanos, bucket, count, sum, bucket, count, sum...}
  local raw = redis.call('GET', skey)
  local st = raw and {cmsgpack.unpack(raw)} or {}
  st = st[1] or {0, 0}
  if st[1] > sec or (st[1] == sec and st[2] > nanos) then sec, nanos = st[1], st[2] end
  local bk = {}
  local newest = -math.huge
  for i = 3, #st, 3 do
    bk[st[i]] = {st[i + 1], st[i + 2]}
    if st[i] > newest then newest = st[i] end
  end
  for p = 1, n_pairs do
    local b, n, s
    b, n, s, pp = struct.unpack("<ddd", pair_blob, pp)
    local e = bk[b]
    if e then e[1] = e[1] + n; e[2] = e[2] + s else bk[b] = {n, s} end
    if b > newest then newest = b end
  end
  local cnt, sum = {}, {}
  for w = 1, n_win do cnt[w] = 0; sum[w] = 0 end
  local keep = {sec, nanos}
  for b, e in pairs(bk) do
    if b > newest - longest then
      keep[#keep + 1] = b; keep[#keep + 1] = e[1]; keep[#keep + 1] = e[2]
      for w = 1, n_win do
        if b > newest - win[w][1] then cnt[w] = cnt[w] + e[1]; sum[w] = sum[w] + e[2] end
      end
    end
  end
  redis.call('SET', skey, cmsgpack.pack(keep), 'EX', state_ttl)
  local ts = (sec > 0 and ('\8' .. varint(sec)) or '')
  if nanos > 0 then ts = ts .. '\16' .. varint(nanos) end
  local args = {fkey, ts_field, ts}
  for w = 1, n_win do
    if win[w][2] ~= '' then
      args[#args + 1] = win[w][2]; args[#args + 1] = encode(win[w][3], cnt[w])
    end
    if win[w][4] ~= '' then
      args[#args + 1] = win[w][4]; args[#args + 1] = encode(win[w][5], sum[w])
    end
  end
  redis.call('HSET', unpack(args))
  if key_ttl > 0 then redis.call('EXPIRE', fkey, key_ttl) end
end
return n_cards
"""
