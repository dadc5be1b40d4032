-- Drops one dead-letter record and corrects the gate for its grant, as one atomic step, only if
-- the record is still there: the seq joins the campaign's free seqs (the gate issues those,
-- lowest first, before advancing its counter), and the user's holder count goes down by one if
-- the dropped grant was the user's latest (its ordinal is the count). The caller decided from
-- PostgreSQL what may be freed (no row holds the seq; none holds the user's ordinal).
-- KEYS: 1 dead letters, 2 meta, 3 holders, 4 free seqs (sorted set, score = seq).
-- ARGV: 1 record id, 2 seq to free or "", 3 user id or "", 4 the grant's user ordinal.
-- Reply: {dropped 0/1, seq freed 0/1, holder count lowered 0/1}. Error: NOCAMPAIGN.
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return {0, 0, 0} end
local n = redis.call('HGET', KEYS[2], 'n')
if not n then return redis.error_reply('NOCAMPAIGN the campaign is not mirrored in Redis') end
local freed, lowered = 0, 0
if ARGV[2] ~= '' then
  local seq = tonumber(ARGV[2])
  -- A seq above the counter was never issued by this mirror: nothing to give back.
  if seq and seq >= 1 and seq <= tonumber(n) then freed = redis.call('ZADD', KEYS[4], seq, ARGV[2]) end
end
if ARGV[3] ~= '' then
  local held = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
  if held > 0 and held == tonumber(ARGV[4]) then
    if held == 1 then redis.call('HDEL', KEYS[3], ARGV[3]) else redis.call('HSET', KEYS[3], ARGV[3], held - 1) end
    lowered = 1
  end
end
-- 'd' counts the corrections: the sold-out fast path re-reads the holders when it moves.
if freed + lowered > 0 then redis.call('HINCRBY', KEYS[2], 'd', 1) end
redis.call('XDEL', KEYS[1], ARGV[1])
return {1, freed, lowered}
