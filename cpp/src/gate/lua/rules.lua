-- The campaign rules (state, quantity) as one atomic step against the gate's own counter, which
-- includes grants still on their way to the store.
-- KEYS: 1 meta, 2 rate counters. ARGV: 1 state, 2 quantity, 3 4 5 the rate limits (per user,
-- per partner (a shard: its share), window ms); when they differ from the mirror's, the current
-- window's counters start again from zero (as in the embedded gate).
-- Errors: NOCAMPAIGN (no mirror: restore it, then retry), BELOWISSUED <n> (quantity below the n
-- coupons already issued; nothing changed). Reply: {issued, quantity, state} after the change.
local m = redis.call('HMGET', KEYS[1], 'q', 'n', 'ru', 'rp', 'rw')
if not m[1] then return redis.error_reply('NOCAMPAIGN campaign is not mirrored in Redis') end
local n = tonumber(m[2] or '0')
local q = tonumber(ARGV[2])
if q < n then return redis.error_reply('BELOWISSUED ' .. n) end
if m[3] ~= ARGV[3] or m[4] ~= ARGV[4] or m[5] ~= ARGV[5] then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[1], 'st', ARGV[1], 'q', ARGV[2], 'ru', ARGV[3], 'rp', ARGV[4], 'rw', ARGV[5])
return {n, q, tonumber(ARGV[1])}
