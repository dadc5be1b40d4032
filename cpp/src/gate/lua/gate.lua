-- The Redis gate: decides a batch of issue requests of one campaign and appends the batch's
-- grants to the campaign's grant log in the same atomic step (a grant exists iff it is in the
-- log). The rule and its order are CampaignGate::decide's (cpp/src/gate/campaign_gate.cpp).
--
-- KEYS: 1 meta, 2 holders, 3 grant stream, 4 answers (current generation), 5 answers (previous),
-- 6 free seqs (sorted set, score = seq: seqs of dropped dead letters, docs/dead-letters.md),
-- 7 rate counters (rate.lua)
-- ARGV: 1 campaign id, 2 answer hash expiry (s), 3.. pairs of (user_id, request_id or ""), then
-- the requests' traceparents when any has one (trace_args.lua)
-- Seqs: a grant takes the lowest free seq if there is one, else the counter n advances. Every
-- free seq is <= n <= quantity, so seqs stay unique and within 1..quantity; the coupons issued
-- are n - #free.
-- Reply: {issued_after (n - #free), quantity, now_us, code per request...}, code = seq * 8 + status where
-- status is IssueStatus (0 ISSUED, 1 SOLD_OUT, 2 ALREADY_ISSUED, 3 NOT_OPEN, 4 ENDED, 5 RATE_LIMITED:
-- then code = retry_after_ms * 8 + 5; a RATE_LIMITED answer is never remembered).
-- The rule, in order (requests.lua): remembered answer; NOT_OPEN / ENDED; sold out -> ALREADY_ISSUED
-- (user at the limit) or SOLD_OUT, not counted; RATE_LIMITED, else counted; ALREADY_ISSUED; ISSUED.
-- The clock is Redis's (TIME), one for every gate process.
-- The batch's grants go to the stream as ONE entry in the grant-entry format of
-- cpp/src/log/grant_entry.hpp: v 1 c <campaign> t <now_us> g <lines>, a line
-- "<seq> <user_ordinal> <user_id> <request_id>" per grant (v 3: and field b, the grants'
-- traceparents: trace_args.lua), in seq order (ids hold no space or newline:
-- limits::is_valid_id). One XADD per batch instead of one per grant: an XADD from Lua
-- costs about as much as the rest of a grant's decision.
if redis.replicate_commands then pcall(redis.replicate_commands) end
--#include trace_args.lua
--#include rate.lua
local m = redis.call('HMGET', KEYS[1], 'q', 'l', 's', 'e', 'st', 'n', 'ru', 'rp', 'rw')
if not m[1] then return redis.error_reply('NOCAMPAIGN campaign ' .. ARGV[1] .. ' is not mirrored in Redis') end
local quantity = tonumber(m[1])
local limit = tonumber(m[2])
local starts = m[3] and tonumber(m[3])
local ends = m[4] and tonumber(m[4])
local state = tonumber(m[5] or '0')
local n = tonumber(m[6] or '0')
local n0 = n
local free = redis.call('ZCARD', KEYS[6])
local t = redis.call('TIME')
local now_s = t[1] .. string.format('%06d', tonumber(t[2]))
local now = tonumber(now_s)
local cid = ARGV[1]
local out = {0, quantity, now_s}
rate_load(KEYS[7], m[7], m[8], m[9], t)
-- The stock: the free seqs (dropped dead letters' seqs) first, then the counter.
local function no_stock(held)
  if free == 0 and n >= quantity then return held >= limit and 2 or 1 end
  return nil
end
local function take_seq()
  if free > 0 then
    free = free - 1
    return tonumber(redis.call('ZPOPMIN', KEYS[6])[1])
  end
  n = n + 1
  return n
end
--#include requests.lua
if #lines > 0 then append_entry(KEYS[3], cid, now_s, lines) end
if n ~= n0 then redis.call('HSET', KEYS[1], 'n', n) end
rate_save()
if remembered then redis.call('EXPIRE', KEYS[4], ARGV[2]) end
out[1] = n - free
return out
