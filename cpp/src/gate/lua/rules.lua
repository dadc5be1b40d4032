-- The campaign rules (state, quantity) as one atomic step against the gate's own counter, which
-- includes grants still on their way to the store.
-- KEYS: 1 meta. ARGV: 1 state, 2 quantity.
-- Errors: NOCAMPAIGN (no mirror: restore it, then retry), BELOWISSUED <n> (quantity below the n
-- coupons already issued; nothing changed). Reply: {issued, quantity, state} after the change.
local m = redis.call('HMGET', KEYS[1], 'q', 'n')
if not m[1] then return redis.error_reply('NOCAMPAIGN campaign is not mirrored in Redis') end
local n = tonumber(m[2] or '0')
local q = tonumber(ARGV[2])
if q < n then return redis.error_reply('BELOWISSUED ' .. n) end
redis.call('HSET', KEYS[1], 'st', ARGV[1], 'q', ARGV[2])
return {n, q, tonumber(ARGV[1])}
