-- delete.lua: removes one job: its hash, every list entry, its schedule and
-- its lease. A worker still running it finds its claim gone (LeaseLost).
--
-- KEYS[1]  job hash
-- KEYS[2]  pending list
-- KEYS[3]  processing list
-- KEYS[4]  completed list
-- KEYS[5]  failed list
-- KEYS[6]  scheduled sorted set
-- KEYS[7]  leases sorted set
-- ARGV[1]  job id
-- Returns: 1 deleted, 0 no such job

local id = ARGV[1]
local token = redis.call('HGET', KEYS[1], 'claim_token')
local removed = redis.call('DEL', KEYS[1])
for k = 2, 5 do
  removed = removed + redis.call('LREM', KEYS[k], 0, id)
end
removed = removed + redis.call('ZREM', KEYS[6], id)
if token and token ~= '' then
  redis.call('ZREM', KEYS[7], lease(id, token))
end
if removed > 0 then
  return 1
end
return 0
