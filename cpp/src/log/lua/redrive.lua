-- Re-drives one dead-letter record: appends the grant-log entry given (its fields) and removes
-- the record, as one atomic step, only if the record is still there and the campaign is
-- mirrored (a mirror restore reads the log and the dead letters while the mirror is missing, so
-- nothing may move between them then: docs/dead-letters.md).
-- KEYS: 1 grant stream, 2 dead letters, 3 meta. ARGV: 1 record id, 2.. field/value pairs of the
-- new entry. Reply: the new entry's id, or 0 if the record is gone. Error: NOCAMPAIGN.
if redis.replicate_commands then pcall(redis.replicate_commands) end
if #redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('NOCAMPAIGN the campaign is not mirrored in Redis')
end
local f = {}
for i = 2, #ARGV do f[#f + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(f))
redis.call('XDEL', KEYS[2], ARGV[1])
return id
