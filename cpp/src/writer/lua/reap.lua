-- Removes a dead consumer from one campaign's group once it holds nothing there: the check and
-- the removal in one step, so a consumer that came back and read meanwhile keeps its entries
-- (XGROUP DELCONSUMER drops the consumer's pending entries with it).
-- KEYS[1] the grant stream; ARGV[1] the group, ARGV[2] the consumer.
-- Returns 1 if removed (or absent), 0 if it holds entries, -1 without the stream or group.
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if type(p) ~= 'table' or p.err then return -1 end
if #p > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
