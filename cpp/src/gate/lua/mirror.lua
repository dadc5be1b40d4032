-- Creates or refreshes a campaign's mirror hash; never resets the issued counter.
-- KEYS: 1 meta. ARGV: 1 quantity, 2 per-user limit, 3 starts_at_us or "", 4 ends_at_us or "",
-- 5 state, 6 the issued counter to start from if the mirror is new. Reply: 1 if created.
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'n', ARGV[6])
  created = 1
end
redis.call('HSET', KEYS[1], 'q', ARGV[1], 'l', ARGV[2], 'st', ARGV[5])
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], 's') else redis.call('HSET', KEYS[1], 's', ARGV[3]) end
if ARGV[4] == '' then redis.call('HDEL', KEYS[1], 'e') else redis.call('HSET', KEYS[1], 'e', ARGV[4]) end
return created
