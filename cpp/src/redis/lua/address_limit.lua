-- The per-client-address limit of the HTTP layer (redis/address_limit.hpp): one fixed window,
-- aligned to the epoch on the Redis clock, counted for every app process of the deployment.
-- KEYS[1]  P{addr}:<window_ms>  hash: *w the window it counts, "a:<address>" -> requests
-- ARGV     address, limit (>= 1), window_ms
-- Returns 0 when the request is admitted (and counted), else the ms to the window's end.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window_ms = tonumber(ARGV[3])
local w = math.floor(now / window_ms)
local field = 'a:' .. ARGV[1]
if redis.call('HGET', KEYS[1], '*w') ~= string.format('%d', w) then
  redis.call('DEL', KEYS[1])  -- an older window's hash counts as empty
  redis.call('HSET', KEYS[1], '*w', string.format('%d', w))
  redis.call('PEXPIREAT', KEYS[1], string.format('%d', (w + 1) * window_ms))
end
local n = tonumber(redis.call('HGET', KEYS[1], field) or '0')
if n >= tonumber(ARGV[2]) then
  return (w + 1) * window_ms - now
end
redis.call('HINCRBY', KEYS[1], field, 1)
return 0
