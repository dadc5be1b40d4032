-- Trace context in a gate call (docs/tracing.md), included by gate.lua and gate_shard.lua.
-- A call whose requests carry no traceparent has ARGV 1, 2 and the (user_id, request_id) pairs
-- (#ARGV even) and does no extra work. Otherwise ONE more ARGV follows the pairs (#ARGV odd):
-- the requests' traceparents in request order, 55 characters each (the W3C version-00 form,
-- checked by the caller), 55 spaces for a request without one. If a grant of the call has one,
-- the entry is version 2 and carries field p: the grants' traceparents in line order, 55
-- characters each (spaces for a grant without one; cpp/src/log/grant_entry.hpp). When every
-- request is granted, p is the argument as it is: no work per grant.
local pairs_end = #ARGV  -- the last ARGV of the pairs
local tps = nil
if pairs_end % 2 == 1 then
  tps = ARGV[pairs_end]
  pairs_end = pairs_end - 1
end
local granted = {}  -- with tps: the ARGV index (user id) of each grant, in line order
-- Field p of the entry, or nil when no grant carries a traceparent.
local function grants_traceparents()
  if not tps then return nil end
  local p = tps
  if #granted ~= (pairs_end - 2) / 2 then
    local parts = {}
    for k = 1, #granted do
      local o = (granted[k] - 3) / 2 * 55 + 1
      parts[k] = string.sub(tps, o, o + 54)
    end
    p = table.concat(parts)
  end
  if not string.find(p, '[^ ]') then return nil end
  return p
end
-- Appends the batch's entry to the grant stream (key): version 1, or 2 with field p.
local function append_entry(key, cid, now_s, lines)
  local p = grants_traceparents()
  if p then
    redis.call('XADD', key, '*', 'v', '2', 'c', cid, 't', now_s, 'g', table.concat(lines, '\n'), 'p', p)
  else
    redis.call('XADD', key, '*', 'v', '1', 'c', cid, 't', now_s, 'g', table.concat(lines, '\n'))
  end
end
