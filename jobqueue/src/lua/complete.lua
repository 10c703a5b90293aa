-- complete.lua: settles a claimed job as completed. Fenced by the claim
-- token and idempotent (fixes reference 8.3 and 8.4).
--
-- KEYS[1]  job hash
-- KEYS[2]  processing list
-- KEYS[3]  completed list
-- KEYS[4]  leases sorted set ("id:token" -> deadline)
-- KEYS[5]  stats hash
-- ARGV[1]  job id
-- ARGV[2]  claim token
-- ARGV[3]  result JSON
-- ARGV[4]  completed TTL in seconds (0 = keep until trimmed off the history)
-- ARGV[5]  completed history cap
-- ARGV[6]  events channel
-- ARGV[7]  job hash prefix (to delete the hashes of ids trimmed off the
--          history: the documented exception)
-- Returns: 1 completed; 0 the token does not hold the job (empty, stale, or
--          the job is not in processing); -1 already settled with this token

Q.prefix, Q.channel = ARGV[7], ARGV[6]
local key, id, token = KEYS[1], ARGV[1], ARGV[2]
if token == '' then
  return 0
end
local f = redis.call('HMGET', key, 'status', 'claim_token', 'settled_token')
if f[2] ~= token then
  if f[3] == token then
    return -1
  end
  return 0
end
if f[1] ~= 'processing' or redis.call('LREM', KEYS[2], 1, id) == 0 then
  return 0
end
local now = ms(now_ms())
redis.call('HSET', key, 'status', 'completed', 'completed_at_ms', now, 'result', ARGV[3],
  'claim_token', '', 'settled_token', token)
redis.call('ZREM', KEYS[4], lease(id, token))
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('EXPIRE', key, ttl)
end
push_history(KEYS[3], id, tonumber(ARGV[5]), 'completed')
redis.call('HINCRBY', KEYS[5], 'completed_total', 1)
publish(id, 'completed')
return 1
