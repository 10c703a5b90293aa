-- promote.lua: moves scheduled jobs whose time has come (delayed jobs and
-- retries waiting out their backoff) to pending, oldest due first.
--
-- KEYS[1]  scheduled sorted set (id -> due time, ms)
-- KEYS[2]  pending list
-- ARGV[1]  job hash prefix (ids come from the scheduled set, so their hash
--          keys are derived here: the documented exception)
-- ARGV[2]  most jobs to move in this call
-- Returns: { number moved, more due jobs waiting (0 or 1) }

local now = now_ms()
local limit = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms(now), 'LIMIT', 0, limit)
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. id
  -- Only a job still waiting is moved: one settled or purged meanwhile is not.
  if redis.call('HGET', key, 'status') == 'scheduled' then
    redis.call('HSET', key, 'status', 'pending')
    redis.call('LPUSH', KEYS[2], id)
    moved = moved + 1
  end
end
local more = 0
if #due == limit then
  more = 1
end
return { moved, more }
