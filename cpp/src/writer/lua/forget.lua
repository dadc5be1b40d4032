-- Forgets a dead consumer's heartbeat, unless it beat again since it was judged dead.
-- KEYS[1] the heartbeat registry; ARGV[1] the consumer, ARGV[2] the beat it was judged on.
-- Returns 1 if forgotten.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
