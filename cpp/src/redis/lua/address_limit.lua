-- The per-client-address limit of the HTTP layer (redis/address_limit.hpp): one fixed window,
-- aligned to the epoch on the Redis clock, counted for every app process of the deployment.
-- A batch of N requests (the callers gathered while the previous call was in flight), counted
-- one after the other in order, at one reading of the clock: two requests of one address in a
-- batch count like two calls in a row.
-- KEYS[i]  P{addr}:<window_ms of request i>
--          hash: *w the window it counts, "a:<address>" -> requests
-- ARGV     per request i: address, limit (>= 1), window_ms  (ARGV[3i-2], ARGV[3i-1], ARGV[3i])
-- Returns N integers, in order: 0 when the request is admitted (and counted), else the ms to
-- the window's end.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local window_ms = tonumber(ARGV[3 * i])
  local w = math.floor(now / window_ms)
  if redis.call('HGET', key, '*w') ~= string.format('%d', w) then
    -- An older window's hash counts as empty; UNLINK frees a large one off the main thread.
    redis.call('UNLINK', key)
    redis.call('HSET', key, '*w', string.format('%d', w))
    redis.call('PEXPIREAT', key, string.format('%d', (w + 1) * window_ms))
  end
  local field = 'a:' .. ARGV[3 * i - 2]
  local n = tonumber(redis.call('HGET', key, field) or '0')
  if n >= tonumber(ARGV[3 * i - 1]) then
    out[i] = (w + 1) * window_ms - now
  else
    redis.call('HINCRBY', key, field, 1)
    out[i] = 0
  end
end
return out
