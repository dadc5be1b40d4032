-- A stock move, step 1, on the donor shard's master: takes the upper half (rounded up) of the
-- donor's free seqs and records the move under its id in the donor's transfers hash, in one
-- atomic step. From here until shard_give.lua adds them to the recipient, the seqs are in no
-- shard's free list: only in this record (so never in two shards).
-- KEYS: 1 donor meta, 2 donor transfers. ARGV: 1 move id, 2 recipient shard.
-- Reply: the ranges taken ("lo-hi,..."), "" if the donor has none (or no mirror).
--#include free_seqs.lua
local f = redis.call('HGET', KEYS[1], 'f')
if not f then return '' end
local free = parse_free(f)
local left = count_free(free)
if left == 0 then return '' end
local want = math.floor((left + 1) / 2)
local taken = {}
while want > 0 do
  local last = free[#free]
  local size = last[2] - last[1] + 1
  if size <= want then
    table.insert(taken, 1, {last[1], last[2]})
    free[#free] = nil
    want = want - size
  else
    table.insert(taken, 1, {last[2] - want + 1, last[2]})
    last[2] = last[2] - want
    want = 0
  end
end
local ranges = format_free(taken)
redis.call('HSET', KEYS[1], 'f', format_free(free), 'r', count_free(free))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ranges)
return ranges
