-- retry.lua: sends dead letters back to pending for a fresh set of attempts
-- (attempts back to 0; last_error kept as history), one job or a batch.
--
-- KEYS[1]  failed list
-- KEYS[2]  pending list
-- KEYS[3]  stats hash
-- ARGV[1]  job hash prefix (ids come from the failed list, so their hash keys
--          are derived here: the documented exception)
-- ARGV[2]  the id to retry, or "" to retry the oldest dead letters
-- ARGV[3]  with ARGV[2] = "": most jobs to retry in this call
-- Returns: { retried ids, more dead letters left (0 or 1) }

local function revive(id)
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 'status') ~= 'failed' then
    return false
  end
  redis.call('LREM', KEYS[1], 0, id)
  redis.call('HSET', key, 'status', 'pending', 'attempts', '0', 'claim_token', '', 'claimed_at_ms', '0')
  redis.call('PERSIST', key)
  redis.call('LPUSH', KEYS[2], id)
  redis.call('HINCRBY', KEYS[3], 'retried_total', 1)
  return true
end

local retried = {}
if ARGV[2] ~= '' then
  if revive(ARGV[2]) then
    retried[1] = ARGV[2]
  end
  return { retried, 0 }
end
local limit = tonumber(ARGV[3])
-- The oldest dead letters sit at the right end.
local ids = redis.call('LRANGE', KEYS[1], -limit, -1)
for i = #ids, 1, -1 do
  if revive(ids[i]) then
    retried[#retried + 1] = ids[i]
  else
    -- An id with no failed job behind it: drop the stale entry.
    redis.call('LREM', KEYS[1], 0, ids[i])
  end
end
local more = 0
if redis.call('LLEN', KEYS[1]) > 0 then
  more = 1
end
return { retried, more }
