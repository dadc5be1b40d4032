-- Drops one dead-letter record and corrects the gate for its grant, as one atomic step, only if
-- the record is still there: the seq joins the campaign's free seqs (the gate issues those,
-- lowest first, before advancing its counter), and the user's holder count goes down by one if
-- the dropped grant was the user's latest (its ordinal is the count). The caller decided from
-- PostgreSQL what may be freed (no row holds the seq; none holds the user's ordinal).
-- A sharded campaign's record is dropped on the shard that granted it (its dead letters, meta
-- and holders: the user's shard): the seq joins that shard's free intervals (meta f) and the
-- shard's issued count n goes down by one, as if the shard had never issued it.
-- KEYS: 1 dead letters, 2 meta, 3 holders, 4 free seqs (sorted set, score = seq; a shard: its meta).
-- ARGV: 1 record id, 2 seq to free or "", 3 user id or "", 4 the grant's user ordinal,
--       5 "shard" for a shard of a sharded campaign (else absent).
-- Reply: {dropped 0/1, seq freed 0/1, holder count lowered 0/1}. Error: NOCAMPAIGN.
--#include free_seqs.lua
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return {0, 0, 0} end
local n = redis.call('HGET', KEYS[2], 'n')
if not n then return redis.error_reply('NOCAMPAIGN the campaign is not mirrored in Redis') end
local freed, lowered = 0, 0
if ARGV[2] ~= '' then
  local seq = tonumber(ARGV[2])
  if ARGV[5] == 'shard' then
    -- A seq in the shard's free intervals already, or past the quantity, is not given twice.
    local q = tonumber(redis.call('HGET', KEYS[2], 'q') or '0')
    if seq and seq >= 1 and seq <= q then
      local free = parse_free(redis.call('HGET', KEYS[2], 'f'))
      freed = 1
      for _, r in ipairs(free) do
        if seq >= r[1] and seq <= r[2] then freed = 0 end
      end
      if freed == 1 then
        free[#free + 1] = {seq, seq}
        table.sort(free, function(a, b) return a[1] < b[1] end)
        redis.call('HSET', KEYS[2], 'f', format_free(free), 'r', count_free(free), 'n', math.max(0, tonumber(n) - 1))
      end
    end
  -- A seq above the counter was never issued by this mirror: nothing to give back.
  elseif seq and seq >= 1 and seq <= tonumber(n) then
    freed = redis.call('ZADD', KEYS[4], seq, ARGV[2])
  end
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
