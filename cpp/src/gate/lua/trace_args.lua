-- Trace context in a gate call (docs/tracing.md), included by gate.lua and gate_shard.lua.
-- A call whose requests carry no traceparent has ARGV 1, 2 and the (user_id, request_id) pairs
-- (#ARGV even) and does no extra work. Otherwise ONE more ARGV follows the pairs (#ARGV odd):
-- the requests' traceparents in request order, each in its 25-byte binary form (trace-id 16,
-- parent-id 8, flags 1: cpp/src/util/traceparent.hpp, checked by the caller), 25 zero bytes for a
-- request without one. If a grant of the call has one, the entry is version 3 and carries field
-- b: the grants' binary traceparents in line order (zeros for a grant without one;
-- cpp/src/log/grant_entry.hpp). When every request is granted, b is the argument as it is: no
-- work per grant.
local pairs_end = #ARGV  -- the last ARGV of the pairs
local tps = nil
if pairs_end % 2 == 1 then
  tps = ARGV[pairs_end]
  pairs_end = pairs_end - 1
end
local granted = {}  -- with tps: the ARGV index (user id) of each grant, in line order
-- Field b of the entry, or nil when no grant carries a traceparent.
local function grants_traceparents()
  if not tps then return nil end
  local b = tps
  if #granted ~= (pairs_end - 2) / 2 then
    local parts = {}
    for k = 1, #granted do
      local o = (granted[k] - 3) / 2 * 25 + 1
      parts[k] = string.sub(tps, o, o + 24)
    end
    b = table.concat(parts)
  end
  if not string.find(b, '[^%z]') then return nil end
  return b
end
-- Appends the batch's entry to the grant stream (key): version 1, or 3 with field b.
local function append_entry(key, cid, now_s, lines)
  local b = grants_traceparents()
  if b then
    redis.call('XADD', key, '*', 'v', '3', 'c', cid, 't', now_s, 'g', table.concat(lines, '\n'), 'b', b)
  else
    redis.call('XADD', key, '*', 'v', '1', 'c', cid, 't', now_s, 'g', table.concat(lines, '\n'))
  end
end
