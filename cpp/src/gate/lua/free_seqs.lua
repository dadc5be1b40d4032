-- Free-seq intervals of a shard (included by the shard scripts): "lo-hi,lo-hi,..." sorted by lo,
-- disjoint, as a Lua array {{lo, hi}, ...}.
local function parse_free(s)
  local out = {}
  if s then
    for lo, hi in string.gmatch(s, '(%d+)-(%d+)') do out[#out + 1] = {tonumber(lo), tonumber(hi)} end
  end
  return out
end
local function format_free(iv)
  local parts = {}
  for i = 1, #iv do parts[i] = iv[i][1] .. '-' .. iv[i][2] end
  return table.concat(parts, ',')
end
local function count_free(iv)
  local r = 0
  for i = 1, #iv do r = r + iv[i][2] - iv[i][1] + 1 end
  return r
end
