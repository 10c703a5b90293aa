-- complete.lua: settles a claimed job as completed. Fenced by the claim
-- token and idempotent (fixes reference bug 8.3, docs/reference-bugs.md#83-complete-is-not-idempotent; reference bug 8.4, docs/reference-bugs.md#84-empty-tokens-match-unclaimed-jobs).
--
-- KEYS[1]  job hash
-- KEYS[2]  processing list
-- KEYS[3]  completed list
-- KEYS[4]  leases sorted set ("id:token" -> deadline)
-- KEYS[5]  stats hash
-- KEYS[6]  settled sorted set (this claim is recorded as ended)
-- ARGV[1]  job id
-- ARGV[2]  claim token
-- ARGV[3]  result JSON
-- ARGV[4]  the queue's completed TTL in seconds (0 = keep until trimmed off
--          the history), for jobs without their own completed_ttl_s field
-- ARGV[5]  completed history cap
-- ARGV[6]  events channel
-- ARGV[7]  job hash prefix (to delete the hashes of ids trimmed off the
--          history: the documented exception)
-- ARGV[8]  how long an ended claim is remembered, in ms, at least (the job's
--          own completed TTL when longer)
-- ARGV[9]  most ended claims remembered
-- Returns: 1 completed; 0 the token does not hold the job (empty, stale, or
--          the job is not in processing); -1 already settled with this token

Q.prefix, Q.channel = ARGV[7], ARGV[6]
Q.stats, Q.settled = KEYS[5], KEYS[6]
local key, id, token = KEYS[1], ARGV[1], ARGV[2]
if token == '' then
  return 0
end
expect(KEYS[2], 'list')
expect(KEYS[3], 'list')
expect(KEYS[4], 'zset')
expect(Q.stats, 'hash')
expect(Q.settled, 'zset')
local kind, f = read_job(key, 'status', 'claim_token', 'settled_token', 'completed_ttl_s')
if kind ~= 'hash' or f[2] ~= token then
  if (kind == 'hash' and f[3] == token) or redis.call('ZSCORE', Q.settled, lease(id, token)) then
    return -1
  end
  return 0
end
if f[1] ~= 'processing' then
  return 0
end
-- The job's own TTL when it is a whole number of seconds, else the queue's.
local ttl = integer(f[4], 0, MAX_TTL_S) or math.min(tonumber(ARGV[4]), MAX_TTL_S)
local now = now_ms()
-- The first write; nothing after it can fail.
if redis.call('LREM', KEYS[2], 1, id) == 0 then
  return 0
end
redis.call('HSET', key, 'status', 'completed', 'completed_at_ms', ms(now), 'result', ARGV[3],
  'claim_token', '', 'settled_token', token)
redis.call('ZREM', KEYS[4], lease(id, token))
if ttl > 0 then
  redis.call('EXPIRE', key, ttl)
end
remember(id, token, now + math.max(tonumber(ARGV[8]), ttl * 1000))
forget(now, tonumber(ARGV[9]))
push_history(KEYS[3], id, tonumber(ARGV[5]), 'completed')
count('completed_total', 1)
publish(id, 'completed')
return 1
