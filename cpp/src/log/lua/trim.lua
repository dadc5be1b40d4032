-- Trims the grant stream (KEYS[1]) of group ARGV[1] up to, not including, its oldest pending
-- entry (or past its last delivered one when nothing is pending): every entry below that point
-- has been delivered and acknowledged, so only acknowledged entries are ever removed. One
-- XTRIM MINID per call instead of an XDEL per entry.
local function trim_acknowledged()
  local last = nil
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, lid
    for k = 1, #g, 2 do
      if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then lid = g[k + 1] end
    end
    if name == ARGV[1] then last = lid end
  end
  if last then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1])
    if p[1] > 0 then
      redis.call('XTRIM', KEYS[1], 'MINID', p[2])
    else
      local ms, seq = string.match(last, '^(%d+)-(%d+)$')
      if ms then redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1)) end
    end
  end
end
