-- Moves one still-pending grant-log entry to the dead-letter stream with its reason, and
-- removes it from the log, only if it is still pending (another writer may have written it
-- meanwhile): one record for a malformed entry (its original fields), one per refused grant of
-- a batch entry.
-- KEYS: 1 grant stream, 2 dead letters, 3 reasons. ARGV: 1 group, 2 entry id, 3 deliveries,
-- 4 record count, then per record: reason, field-pair count n, n field/value pairs. Each
-- record: id, reason, deliveries, its fields. Reply: 1 if moved.
--#include trim.lua
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
local i = 5
for r = 1, tonumber(ARGV[4]) do
  local args = {'id', ARGV[2], 'reason', ARGV[i], 'deliveries', ARGV[3]}
  local n = tonumber(ARGV[i + 1])
  for j = i + 2, i + 1 + 2 * n do args[#args + 1] = ARGV[j] end
  redis.call('XADD', KEYS[2], '*', unpack(args))
  i = i + 2 + 2 * n
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
trim_acknowledged()
return 1
