-- Acknowledges grant-log entries whose grants are all in the store, forgets their failure
-- reasons, then trims the stream up to its oldest pending entry.
-- KEYS: 1 grant stream, 2 reasons. ARGV: 1 group, 2.. entry ids. Reply: entries acknowledged.
--#include trim.lua
local acked = 0
local why = redis.call('EXISTS', KEYS[2]) == 1
for i = 2, #ARGV, 500 do
  local ids = {}
  for j = i, math.min(i + 499, #ARGV) do ids[#ids + 1] = ARGV[j] end
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  if why then redis.call('HDEL', KEYS[2], unpack(ids)) end
end
trim_acknowledged()
return acked
