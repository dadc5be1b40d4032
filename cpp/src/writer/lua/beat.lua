-- A writer process's heartbeat: every consumer in ARGV beats now, on this server's clock.
-- KEYS[1] the heartbeat registry (hash consumer -> last beat, ms since the epoch)
-- Returns the time written (ms). TIME before a write needs effects replication: the default
-- from Redis 5 on (and the only mode in 7); asked for explicitly where the call still exists.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], now)
end
return now
