-- Creates or refreshes a campaign's mirror hash; never resets the seq counter or the free seqs.
-- KEYS: 1 meta, 2 free seqs. ARGV: 1 quantity, 2 per-user limit, 3 starts_at_us or "",
-- 4 ends_at_us or "", 5 state, 6 the seq counter to start from if the mirror is new, 7 8 9 the
-- rate limits (per user, per partner, window ms), 10.. the free seqs to start with if the
-- mirror is new (a restore: seqs <= the counter that hold no grant anywhere). Reply: 1 if created.
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'n', ARGV[6])
  redis.call('DEL', KEYS[2])
  for i = 10, #ARGV, 1000 do
    local zs = {}
    for j = i, math.min(i + 999, #ARGV) do
      zs[#zs + 1] = ARGV[j]
      zs[#zs + 1] = ARGV[j]
    end
    redis.call('ZADD', KEYS[2], unpack(zs))
  end
  created = 1
end
redis.call('HSET', KEYS[1], 'q', ARGV[1], 'l', ARGV[2], 'st', ARGV[5], 'ru', ARGV[7], 'rp', ARGV[8], 'rw', ARGV[9])
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], 's') else redis.call('HSET', KEYS[1], 's', ARGV[3]) end
if ARGV[4] == '' then redis.call('HDEL', KEYS[1], 'e') else redis.call('HSET', KEYS[1], 'e', ARGV[4]) end
return created
