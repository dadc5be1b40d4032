-- The id time (ms) of the oldest entry the group has not delivered to any writer yet: the first
-- entry after the group's last-delivered-id (every entry if there is no group). 0: none.
-- KEYS[1] the grant stream; ARGV[1] the group.
local after = '-'
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) ~= 'table' or groups.err then return 0 end  -- no stream: nothing unread
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == ARGV[1] and last then after = '(' .. last end
end
local e = redis.call('XRANGE', KEYS[1], after, '+', 'COUNT', 1)
if #e == 0 then return 0 end
return tonumber(string.match(e[1][1], '^(%d+)'))
