-- Rate limits (included by gate.lua and gate_shard.lua; docs/rate-limits.md): fixed windows of
-- rw ms on Redis's clock (TIME), aligned to the epoch. The counters live in one hash per
-- campaign (per shard): '*w' = the window they count, '*' = requests counted for the whole
-- campaign, <user_id> = the user's (user ids never hold '*': limits::is_valid_id, so no user
-- can be one of the first two). The hash
-- expires at the window's end (PEXPIRE), so nothing accumulates; a hash left from an older
-- window ('*w' differs) counts as empty.
local rate = nil  -- nil: the campaign has no limit
-- Reads the window, the campaign's count and (per-user limit) the counters of the users of
-- ARGV 3..pairs_end (trace_args.lua, included first): one HMGET per 1,000 users, the first one also reading '*w' and '*'.
local function rate_load(key, ru, rp, rw, t)
  ru, rp, rw = tonumber(ru or '0'), tonumber(rp or '0'), tonumber(rw or '1000')
  if ru == 0 and rp == 0 then return end
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local rem = now_ms % rw
  rate = {key = key, ru = ru, rp = rp, window = string.format('%d', (now_ms - rem) / rw), retry = rw - rem,
          of = {}, dirty = {}, changed = {}, total = 0, fresh = true, counted = false}
  local i = 3
  repeat
    local fields, users, off = {}, {}, 0
    if i == 3 then fields, off = {'*w', '*'}, 2 end
    if ru > 0 then
      for j = i, math.min(i + 1998, pairs_end), 2 do
        users[#users + 1] = ARGV[j]
        fields[#fields + 1] = ARGV[j]
      end
    end
    local got = redis.call('HMGET', key, unpack(fields))
    if i == 3 then
      if got[1] ~= rate.window then return end  -- no counters of this window yet
      rate.fresh = false
      rate.total = tonumber(got[2] or '0')
    end
    for j = 1, #users do rate.of[users[j]] = tonumber(got[j + off] or '0') end
    i = i + 2000
  until ru == 0 or i > pairs_end
end
-- The rule's rate step: nil when the request is admitted (and counted for the user and the
-- campaign), else the RATE_LIMITED code: (ms to the window's end) * 8 + 5.
local function rate_refuse(user)
  if not rate then return nil end
  local mine = rate.of[user] or 0
  if (rate.ru > 0 and mine >= rate.ru) or (rate.rp > 0 and rate.total >= rate.rp) then
    return rate.retry * 8 + 5
  end
  rate.total = rate.total + 1
  rate.counted = true
  if rate.ru > 0 then
    if not rate.dirty[user] then
      rate.dirty[user] = true
      rate.changed[#rate.changed + 1] = user
    end
    rate.of[user] = mine + 1
  end
  return nil
end
-- Writes the counters back (one HSET per 1,000 users); a hash new in this window is set to
-- expire at its end (an existing one already is).
local function rate_save()
  if not rate or not rate.counted then return end
  if rate.fresh then redis.call('DEL', rate.key) end
  local kv = {'*w', rate.window, '*', rate.total}
  for i = 1, #rate.changed do
    kv[#kv + 1] = rate.changed[i]
    kv[#kv + 1] = rate.of[rate.changed[i]]
    if #kv >= 2000 then
      redis.call('HSET', rate.key, unpack(kv))
      kv = {}
    end
  end
  if #kv > 0 then redis.call('HSET', rate.key, unpack(kv)) end
  if rate.fresh then redis.call('PEXPIRE', rate.key, rate.retry) end
end
