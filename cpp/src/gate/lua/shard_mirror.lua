-- Creates or refreshes the mirror hash of one shard of a sharded campaign; never touches its
-- counter or free seqs once it exists (see gate_shard.lua).
-- KEYS: 1 meta. ARGV: 1 quantity, 2 per-user limit, 3 starts_at_us or "", 4 ends_at_us or "",
-- 5 state, 6 shards, 7 shard, 8 issued if new, 9 free seqs if new ("lo-hi,..." or ""),
-- 10 11 12 the rate limits (per user, this shard's share of the per-partner limit, window ms).
-- Reply: 1 if created.
--#include free_seqs.lua
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'n', ARGV[8], 'f', ARGV[9], 'r', count_free(parse_free(ARGV[9])))
  created = 1
end
redis.call('HSET', KEYS[1], 'q', ARGV[1], 'l', ARGV[2], 'st', ARGV[5], 'k', ARGV[6], 'i', ARGV[7],
           'ru', ARGV[10], 'rp', ARGV[11], 'rw', ARGV[12])
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], 's') else redis.call('HSET', KEYS[1], 's', ARGV[3]) end
if ARGV[4] == '' then redis.call('HDEL', KEYS[1], 'e') else redis.call('HSET', KEYS[1], 'e', ARGV[4]) end
return created
