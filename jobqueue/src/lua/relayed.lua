-- relayed.lua: deletes outbox entries once they are relayed (to their batch,
-- or as the next step of their chain). An entry is deleted only when it is
-- still the one the relay read (same time written): a job that ended again
-- meanwhile (retried from the dead letters) keeps its new entry.
-- (docs/data-model.md#workflows)
--
-- KEYS[1]  outbox sorted set
-- KEYS[2]  outbox entries hash
-- ARGV[1..] pairs: job id, the entry's time as read (ms)
-- Returns: the number of entries deleted

local outbox, entries = KEYS[1], KEYS[2]
expect(outbox, 'zset')
expect(entries, 'hash')
local gone = {}
for at = 1, #ARGV - 1, 2 do
  local id = ARGV[at]
  local score = redis.call('ZSCORE', outbox, id)
  if score and tonumber(score) == tonumber(ARGV[at + 1]) then
    gone[#gone + 1] = id
  end
end
if #gone > 0 then
  redis.call('ZREM', outbox, unpack(gone))
  redis.call('HDEL', entries, unpack(gone))
end
return #gone
