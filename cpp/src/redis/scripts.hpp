// The Lua scripts of the production deployment. Each runs atomically inside Redis and touches
// only the keys of one campaign (one hash tag; see keys.hpp).
//
//   kGateLua        decides a batch of issue requests and appends the grants to the grant log
//                   in the same atomic step; the rule and its order are CampaignGate::decide's
//   kMirrorLua      creates or refreshes a campaign's mirror hash (never resets the counter)
//   kHoldersMaxLua  restores holder counts from the store (keeps the larger count)
//   kAckLua         acknowledges written grant-log entries, then trims the stream up to the
//                   oldest pending entry (XTRIM MINID): only acknowledged entries are removed
//   kDeadLetterLua  moves one still-pending entry to the dead-letter stream with its reason
//   kRulesLua       changes a campaign's state and quantity in its mirror (never below issued)
#pragma once

namespace couponcore::redis {

// KEYS: 1 meta, 2 holders, 3 grant stream, 4 answers (current generation), 5 answers (previous)
// ARGV: 1 campaign id, 2 answer hash expiry (s), 3.. pairs of (user_id, request_id or "")
// Reply: {issued_after, quantity, now_us, code per request...}, code = seq * 8 + status where
// status is IssueStatus (0 ISSUED, 1 SOLD_OUT, 2 ALREADY_ISSUED, 3 NOT_OPEN, 4 ENDED).
// The clock is Redis's (TIME), one for every gate process.
// The batch's grants go to the stream as ONE entry: c <campaign> t <now_us> g <lines>, a line
// "<seq> <user_ordinal> <user_id> <request_id>" per grant, in seq order (ids hold no space or
// newline: limits::is_valid_id). One XADD per batch instead of one per grant: an XADD from Lua
// costs about as much as the rest of a grant's decision. The writer also reads the older
// one-grant entries (c s u o r t); see writer::parse_grants.
inline constexpr const char* kGateLua = R"lua(
if redis.replicate_commands then pcall(redis.replicate_commands) end
local m = redis.call('HMGET', KEYS[1], 'q', 'l', 's', 'e', 'st', 'n')
if not m[1] then return redis.error_reply('NOCAMPAIGN campaign ' .. ARGV[1] .. ' is not mirrored in Redis') end
local quantity = tonumber(m[1])
local limit = tonumber(m[2])
local starts = m[3] and tonumber(m[3])
local ends = m[4] and tonumber(m[4])
local state = tonumber(m[5] or '0')
local n = tonumber(m[6] or '0')
local n0 = n
local t = redis.call('TIME')
local now_s = t[1] .. string.format('%06d', tonumber(t[2]))
local now = tonumber(now_s)
local cid = ARGV[1]
local out = {0, quantity, now_s}
local remembered = false
-- Holder counts: read with one HMGET per 1,000 requests, kept in held_of while the batch is
-- decided, written back with one HSET per 1,000 changed holders (not an HGET + HSET per request).
local held_of, changed, dirty, lines = {}, {}, {}, {}
for i = 3, #ARGV, 2000 do
  local users = {}
  for j = i, math.min(i + 1998, #ARGV), 2 do users[#users + 1] = ARGV[j] end
  local h = redis.call('HMGET', KEYS[2], unpack(users))
  for j = 1, #users do held_of[users[j]] = tonumber(h[j] or '0') end
end
for i = 3, #ARGV, 2 do
  local user, rid = ARGV[i], ARGV[i + 1]
  local akey = nil
  local code = nil
  if rid ~= '' then
    akey = user .. '|' .. rid
    code = redis.call('HGET', KEYS[4], akey)
    if not code then code = redis.call('HGET', KEYS[5], akey) end
    if code then code = tonumber(code) end
  end
  if not code then
    local held = held_of[user]
    if state == 1 then code = 3
    elseif state == 2 then code = 4
    elseif starts and now < starts then code = 3
    elseif ends and now >= ends then code = 4
    elseif held >= limit then code = 2
    elseif n >= quantity then code = 1
    else
      n = n + 1
      held = held + 1
      if not dirty[user] then
        dirty[user] = true
        changed[#changed + 1] = user
      end
      held_of[user] = held
      lines[#lines + 1] = n .. ' ' .. held .. ' ' .. user .. ' ' .. rid
      code = n * 8
    end
    if akey then
      redis.call('HSET', KEYS[4], akey, code)
      remembered = true
    end
  end
  out[#out + 1] = code
end
if #lines > 0 then redis.call('XADD', KEYS[3], '*', 'c', cid, 't', now_s, 'g', table.concat(lines, '\n')) end
for i = 1, #changed, 1000 do
  local kv = {}
  for j = i, math.min(i + 999, #changed) do
    kv[#kv + 1] = changed[j]
    kv[#kv + 1] = held_of[changed[j]]
  end
  redis.call('HSET', KEYS[2], unpack(kv))
end
if n ~= n0 then redis.call('HSET', KEYS[1], 'n', n) end
if remembered then redis.call('EXPIRE', KEYS[4], ARGV[2]) end
out[1] = n
return out
)lua";

// KEYS: 1 meta. ARGV: 1 quantity, 2 per-user limit, 3 starts_at_us or "", 4 ends_at_us or "",
// 5 state, 6 the issued counter to start from if the mirror is new. Reply: 1 if created.
inline constexpr const char* kMirrorLua = R"lua(
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'n', ARGV[6])
  created = 1
end
redis.call('HSET', KEYS[1], 'q', ARGV[1], 'l', ARGV[2], 'st', ARGV[5])
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], 's') else redis.call('HSET', KEYS[1], 's', ARGV[3]) end
if ARGV[4] == '' then redis.call('HDEL', KEYS[1], 'e') else redis.call('HSET', KEYS[1], 'e', ARGV[4]) end
return created
)lua";

// KEYS: 1 holders. ARGV: pairs (user_id, count).
inline constexpr const char* kHoldersMaxLua = R"lua(
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
)lua";

// Trims the grant stream (KEYS[1]) of group ARGV[1] up to, not including, its oldest pending
// entry (or past its last delivered one when nothing is pending): every entry below that point
// has been delivered and acknowledged, so only acknowledged entries are ever removed. One
// XTRIM MINID per call instead of an XDEL per entry.
#define COUPONCORE_TRIM_LUA \
  "local last = nil\n" \
  "for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do\n" \
  "  local name, lid\n" \
  "  for k = 1, #g, 2 do\n" \
  "    if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then lid = g[k + 1] end\n" \
  "  end\n" \
  "  if name == ARGV[1] then last = lid end\n" \
  "end\n" \
  "if last then\n" \
  "  local p = redis.call('XPENDING', KEYS[1], ARGV[1])\n" \
  "  if p[1] > 0 then\n" \
  "    redis.call('XTRIM', KEYS[1], 'MINID', p[2])\n" \
  "  else\n" \
  "    local ms, seq = string.match(last, '^(%d+)-(%d+)$')\n" \
  "    if ms then redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1)) end\n" \
  "  end\n" \
  "end\n"

// KEYS: 1 grant stream, 2 reasons. ARGV: 1 group, 2.. entry ids. Reply: entries acknowledged.
inline constexpr const char* kAckLua =
    "local acked = 0\n"
    "local why = redis.call('EXISTS', KEYS[2]) == 1\n"
    "for i = 2, #ARGV, 500 do\n"
    "  local ids = {}\n"
    "  for j = i, math.min(i + 499, #ARGV) do ids[#ids + 1] = ARGV[j] end\n"
    "  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))\n"
    "  if why then redis.call('HDEL', KEYS[2], unpack(ids)) end\n"
    "end\n" COUPONCORE_TRIM_LUA
    "return acked\n";

// KEYS: 1 grant stream, 2 dead letters, 3 reasons. ARGV: 1 group, 2 entry id, 3 deliveries,
// 4 record count, then per record: reason, field-pair count n, n field/value pairs. Adds the
// records to the dead-letter stream (each: id, reason, deliveries, its fields) and removes the
// entry, only if it is still pending (another writer may have written it meanwhile): one
// record for a malformed entry (its original fields), one per refused grant of a batch entry.
// Reply: 1 if moved.
inline constexpr const char* kDeadLetterLua =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)\n"
    "if #p == 0 then return 0 end\n"
    "local i = 5\n"
    "for r = 1, tonumber(ARGV[4]) do\n"
    "  local args = {'id', ARGV[2], 'reason', ARGV[i], 'deliveries', ARGV[3]}\n"
    "  local n = tonumber(ARGV[i + 1])\n"
    "  for j = i + 2, i + 1 + 2 * n do args[#args + 1] = ARGV[j] end\n"
    "  redis.call('XADD', KEYS[2], '*', unpack(args))\n"
    "  i = i + 2 + 2 * n\n"
    "end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "redis.call('HDEL', KEYS[3], ARGV[2])\n" COUPONCORE_TRIM_LUA
    "return 1\n";

#undef COUPONCORE_TRIM_LUA

// KEYS: 1 meta. ARGV: 1 state, 2 quantity. The campaign rules as one atomic step against the
// gate's own counter, which includes grants still on their way to the store. Errors:
// NOCAMPAIGN (no mirror: restore it, then retry), BELOWISSUED <n> (quantity below the n coupons
// already issued; nothing changed). Reply: {issued, quantity, state} after the change.
inline constexpr const char* kRulesLua = R"lua(
local m = redis.call('HMGET', KEYS[1], 'q', 'n')
if not m[1] then return redis.error_reply('NOCAMPAIGN campaign is not mirrored in Redis') end
local n = tonumber(m[2] or '0')
local q = tonumber(ARGV[2])
if q < n then return redis.error_reply('BELOWISSUED ' .. n) end
redis.call('HSET', KEYS[1], 'st', ARGV[1], 'q', ARGV[2])
return {n, q, tonumber(ARGV[1])}
)lua";

}  // namespace couponcore::redis
