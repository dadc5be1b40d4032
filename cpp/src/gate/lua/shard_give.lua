-- A stock move, step 2, on the recipient shard's master: adds the ranges of move `id` to the
-- recipient's free seqs exactly once (the received set remembers the id), kept sorted.
-- KEYS: 1 recipient meta, 2 recipient received set. ARGV: 1 move id, 2 ranges.
-- Reply: 1 if added now, 0 if this move had been received before. Error NOCAMPAIGN: no mirror.
--#include free_seqs.lua
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOCAMPAIGN shard is not mirrored in Redis') end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
local free = parse_free(redis.call('HGET', KEYS[1], 'f'))
for _, r in ipairs(parse_free(ARGV[2])) do free[#free + 1] = r end
table.sort(free, function(a, b) return a[1] < b[1] end)
redis.call('HSET', KEYS[1], 'f', format_free(free), 'r', count_free(free))
return 1
