-- Trace context in a gate call (docs/tracing.md), included by gate.lua and gate_shard.lua.
-- A call whose requests carry no traceparent has ARGV 1, 2 and the (user_id, request_id) pairs
-- (#ARGV even) and does no extra work. Otherwise ONE more ARGV follows the pairs (#ARGV odd):
-- the requests' traceparents in request order, 55 characters each (the W3C version-00 form,
-- checked by the caller), 55 spaces for a request without one. A grant with one carries it as a
-- fifth token of its grant line, and the entry is then version 2 (cpp/src/log/grant_entry.hpp).
local pairs_end = #ARGV  -- the last ARGV of the pairs
local tps = nil
if pairs_end % 2 == 1 then
  tps = ARGV[pairs_end]
  pairs_end = pairs_end - 1
end
local entry_version = '1'
-- The grant line of the request at ARGV index i (its user id), with its traceparent if any;
-- called only when tps is set.
local function traced_line(line, i)
  local o = (i - 3) / 2 * 55 + 1
  if string.byte(tps, o) ~= 32 then
    entry_version = '2'
    return line .. ' ' .. string.sub(tps, o, o + 54)
  end
  return line
end
