-- Raises a sharded campaign's quantity (gate/shards.hpp, "raise"), on shard 0, whose q is the
-- campaign's stock watermark: the new seqs (q + 1 .. the new quantity) join shard 0's free
-- intervals and q moves up, in one step, so a repeated raise to the same quantity adds nothing
-- (the rule change's retry). Moves spread the new stock when other shards run dry.
-- KEYS: 1 shard 0's meta. ARGV: 1 the new quantity.
-- Reply: the seqs added (0 if q is there already). Error: NOCAMPAIGN (no mirror).
--#include free_seqs.lua
local q = redis.call('HGET', KEYS[1], 'q')
if not q then return redis.error_reply('NOCAMPAIGN shard is not mirrored in Redis') end
q = tonumber(q)
local to = tonumber(ARGV[1])
if to <= q then return 0 end
local free = parse_free(redis.call('HGET', KEYS[1], 'f'))
free[#free + 1] = {q + 1, to}  -- above every seq there: stays sorted
redis.call('HSET', KEYS[1], 'f', format_free(free), 'r', count_free(free), 'q', to)
return to - q
