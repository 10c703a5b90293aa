-- complete.lua: settles a claimed job as completed. Fenced by the claim
-- token and idempotent (fixes reference bug 8.3, docs/reference-bugs.md#83-complete-is-not-idempotent; reference bug 8.4, docs/reference-bugs.md#84-empty-tokens-match-unclaimed-jobs).
--
-- KEYS[1]  job hash
-- KEYS[2]  processing list
-- KEYS[3]  completed list
-- KEYS[4]  leases sorted set ("id:token" -> deadline)
-- KEYS[5]  stats hash
-- ARGV[1]  job id
-- ARGV[2]  claim token
-- ARGV[3]  result JSON
-- ARGV[4]  the queue's completed TTL in seconds (0 = keep until trimmed off
--          the history), for jobs without their own completed_ttl_s field
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
local f = redis.call('HMGET', key, 'status', 'claim_token', 'settled_token', 'completed_ttl_s')
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
-- The job's own TTL when it is a whole number of seconds, else the queue's.
local ttl = tonumber(f[4])
if ttl == nil or ttl < 0 or ttl ~= math.floor(ttl) or ttl > 31536000 then
  ttl = tonumber(ARGV[4])
end
if ttl > 0 then
  redis.call('EXPIRE', key, ttl)
end
push_history(KEYS[3], id, tonumber(ARGV[5]), 'completed')
redis.call('HINCRBY', KEYS[5], 'completed_total', 1)
publish(id, 'completed')
return 1
