-- relayed.lua: deletes outbox entries once they are relayed (to their batch,
-- or as the next step of their chain). An entry is deleted only when it is
-- still the one the relay read (same time written): a job that ended again
-- meanwhile (retried from the dead letters) keeps its new entry.
-- (docs/data-model.md#workflows)
--
-- The entry hashes are derived from the outbox entry prefix and the ids
-- (the documented exception); they share the outbox's slot.
--
-- KEYS[1]  outbox sorted set
-- ARGV[1]  outbox entry prefix (queue:{name}:outbox:)
-- ARGV[2..] pairs: job id, the entry's time as read (ms)
-- Returns: the number of entries deleted

local outbox, prefix = KEYS[1], ARGV[1]
expect(outbox, 'zset')
local gone = {}
for at = 2, #ARGV, 2 do
  local id = ARGV[at]
  local score = redis.call('ZSCORE', outbox, id)
  if score and tonumber(score) == tonumber(ARGV[at + 1]) then
    gone[#gone + 1] = id
  end
end
for _, id in ipairs(gone) do
  redis.call('ZREM', outbox, id)
  redis.call('DEL', prefix .. id)
end
return #gone
