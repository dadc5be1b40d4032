-- The per-request rule of a gate call, included by gate.lua and gate_shard.lua where they decide
-- their requests (the rule and its order are CampaignGate::decide's, cpp/src/gate/campaign_gate.cpp):
-- remembered answer; NOT_OPEN / ENDED; no stock; RATE_LIMITED (rate.lua), else counted;
-- ALREADY_ISSUED; ISSUED. KEYS 2 holders, 4 and 5 answers (current, previous generation).
-- The including script has set before it: limit, starts, ends, state, now (from its meta hash and
-- TIME), out (the reply, a code appended per request) and two functions, its stock:
--   no_stock(held)  nil while there is stock for the request, else its code and whether the
--                   answer is not to be remembered (a shard's DRY)
--   take_seq()      the seq of a grant
-- It leaves: lines (the grants' lines of the entry, in seq order), remembered (an answer was
-- stored: the caller sets the answers' expiry); granted (trace_args.lua) and the holder counts
-- written back.
-- Holder counts: read with one HMGET per 1,000 requests, kept in held_of while the batch is
-- decided, written back with one HSET per 1,000 changed holders (not an HGET + HSET per request).
local remembered = false
local held_of, changed, dirty, lines = {}, {}, {}, {}
for i = 3, pairs_end, 2000 do
  local users = {}
  for j = i, math.min(i + 1998, pairs_end), 2 do users[#users + 1] = ARGV[j] end
  local h = redis.call('HMGET', KEYS[2], unpack(users))
  for j = 1, #users do held_of[users[j]] = tonumber(h[j] or '0') end
end
for i = 3, pairs_end, 2 do
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
    local forget = nil
    if state == 1 then code = 3
    elseif state == 2 then code = 4
    elseif starts and now < starts then code = 3
    elseif ends and now >= ends then code = 4
    else
      code, forget = no_stock(held)
      if not code then
        code = rate_refuse(user)
        forget = code
      end
    end
    if code then
    elseif held >= limit then code = 2
    else
      local seq = take_seq()
      held = held + 1
      if not dirty[user] then
        dirty[user] = true
        changed[#changed + 1] = user
      end
      held_of[user] = held
      lines[#lines + 1] = seq .. ' ' .. held .. ' ' .. user .. ' ' .. rid
      if tps then granted[#granted + 1] = i end
      code = seq * 8
    end
    if akey and not forget then
      redis.call('HSET', KEYS[4], akey, code)
      remembered = true
    end
  end
  out[#out + 1] = code
end
for i = 1, #changed, 1000 do
  local kv = {}
  for j = i, math.min(i + 999, #changed) do
    kv[#kv + 1] = changed[j]
    kv[#kv + 1] = held_of[changed[j]]
  end
  redis.call('HSET', KEYS[2], unpack(kv))
end
