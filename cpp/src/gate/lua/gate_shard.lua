-- The Redis gate for one shard of a sharded campaign (gate/shards.hpp): gate.lua's rule, except
-- that seqs come from this shard's free intervals (meta field f) instead of a counter, and a
-- request that finds the shard empty is answered DRY (status 5), not remembered: the gate moves
-- stock here from the other shards and asks again, and says SOLD_OUT only when every shard is dry.
--
-- KEYS: 1 meta, 2 holders, 3 grant stream, 4 answers (current generation), 5 answers (previous),
-- 6 rate counters (rate.lua: the user's counter lives with the user's shard; rp is this shard's
-- share of the campaign's limit)
-- ARGV: 1 campaign id, 2 answer hash expiry (s), 3.. pairs of (user_id, request_id or ""), then
-- the requests' traceparents when any has one (trace_args.lua)
-- Reply: {issued by this shard, free seqs left in it, now_us, code per request...}, code =
-- seq * 8 + status (0 ISSUED, 1 SOLD_OUT, 2 ALREADY_ISSUED, 3 NOT_OPEN, 4 ENDED, 5 RATE_LIMITED
-- with retry_after_ms in place of the seq, 6 DRY). A DRY answer is not counted against the rate
-- limits (the request is asked again); a user at the limit in a dry shard is ALREADY_ISSUED.
-- The grant-log entry is gate.lua's (seqs of one entry in increasing order).
if redis.replicate_commands then pcall(redis.replicate_commands) end
--#include free_seqs.lua
--#include trace_args.lua
--#include rate.lua
local m = redis.call('HMGET', KEYS[1], 'q', 'l', 's', 'e', 'st', 'n', 'f', 'ru', 'rp', 'rw')
if not m[1] then return redis.error_reply('NOCAMPAIGN campaign ' .. ARGV[1] .. ' is not mirrored in Redis') end
local limit = tonumber(m[2])
local starts = m[3] and tonumber(m[3])
local ends = m[4] and tonumber(m[4])
local state = tonumber(m[5] or '0')
local n = tonumber(m[6] or '0')
local n0 = n
local free = parse_free(m[7])
local fi = 1  -- the interval seqs are taken from
local t = redis.call('TIME')
local now_s = t[1] .. string.format('%06d', tonumber(t[2]))
local now = tonumber(now_s)
local cid = ARGV[1]
local out = {0, 0, now_s}
rate_load(KEYS[6], m[8], m[9], m[10], t)
-- The stock: this shard's free intervals; none left: DRY, or ALREADY_ISSUED for a user at the limit.
local function no_stock(held)
  if fi <= #free then return nil end
  if held >= limit then return 2 end
  return 6, true
end
local function take_seq()
  local seq = free[fi][1]
  if seq == free[fi][2] then fi = fi + 1 else free[fi][1] = seq + 1 end
  n = n + 1
  return seq
end
--#include requests.lua
if #lines > 0 then append_entry(KEYS[3], cid, now_s, lines) end
local left = {}
for i = fi, #free do left[#left + 1] = free[i] end
if n ~= n0 then redis.call('HSET', KEYS[1], 'n', n, 'f', format_free(left), 'r', count_free(left)) end
rate_save()
if remembered then redis.call('EXPIRE', KEYS[4], ARGV[2]) end
out[1] = n
out[2] = count_free(left)
return out
