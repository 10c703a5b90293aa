-- fail.lua: settles a claimed job that failed: back to pending while it has
-- attempts left, else to the dead letters. The decision is made here from the
-- stored attempts and max_attempts (fixes reference bug 8.13, docs/reference-bugs.md#813-retry-policy-is-decided-by-the-client), fenced by the
-- claim token and idempotent (reference bug 8.3, docs/reference-bugs.md#83-complete-is-not-idempotent; reference bug 8.4, docs/reference-bugs.md#84-empty-tokens-match-unclaimed-jobs).
--
-- KEYS[1]  job hash
-- KEYS[2]  processing list
-- KEYS[3]  pending list
-- KEYS[4]  failed list
-- KEYS[5]  leases sorted set
-- KEYS[6]  stats hash
-- KEYS[7]  scheduled sorted set (id -> due time, ms)
-- KEYS[8]  settled sorted set (this claim is recorded as ended)
-- ARGV[1]  job id
-- ARGV[2]  claim token
-- ARGV[3]  error text, stored as last_error
-- ARGV[4]  "retry" to retry while attempts remain, "permanent" to fail now
-- ARGV[5]  default max attempts, for jobs without a max_attempts field
-- ARGV[6]  failed history cap
-- ARGV[7]  events channel
-- ARGV[8]  job hash prefix (to delete the hashes of ids trimmed off the
--          history: the documented exception)
-- ARGV[9]  retry delay in ms: 0 back to pending now, else scheduled
-- ARGV[10] how long an ended claim is remembered, in ms
-- ARGV[11] most ended claims remembered
-- Returns: 1 retrying (pending now, or scheduled after the delay); 2 failed
--          for good; 0 the token does not hold the job; -1 already settled
--          with this token

Q.prefix, Q.channel = ARGV[8], ARGV[7]
Q.pending, Q.failed, Q.leases, Q.stats, Q.settled = KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[8]
Q.failed_cap = tonumber(ARGV[6])
local key, id, token = KEYS[1], ARGV[1], ARGV[2]
if token == '' then
  return 0
end
expect(KEYS[2], 'list')
expect(Q.pending, 'list')
expect(Q.failed, 'list')
expect(Q.leases, 'zset')
expect(Q.stats, 'hash')
expect(KEYS[7], 'zset')
expect(Q.settled, 'zset')
local kind, f = read_job(key, 'status', 'claim_token', 'settled_token', 'attempts', 'max_attempts')
if kind ~= 'hash' or f[2] ~= token then
  if (kind == 'hash' and f[3] == token) or redis.call('ZSCORE', Q.settled, lease(id, token)) then
    return -1
  end
  return 0
end
if f[1] ~= 'processing' then
  return 0
end
-- Numbers that are not decimal integers cannot decide a retry: the job is
-- failed for good, with both reasons.
local reason = ARGV[3]
local retry = false
if ARGV[4] == 'retry' then
  local attempts, max = job_numbers(f[4], f[5], nil, ARGV[5], ms(MIN_VISIBILITY_MS))
  if attempts == nil then
    reason = reason .. '; not retried: ' .. max
  else
    retry = attempts < max
  end
end
local delay = math.min(tonumber(ARGV[9]) or 0, MAX_DURATION_MS)
local now = now_ms()
-- The first write; nothing after it can fail.
if redis.call('LREM', KEYS[2], 1, id) == 0 then
  return 0
end
redis.call('HSET', key, 'settled_token', token)
remember(id, token, now + tonumber(ARGV[10]))
forget(now, tonumber(ARGV[11]))
if retry then
  redis.call('HSET', key, 'status', 'pending', 'last_error', reason, 'last_error_at_ms', ms(now),
    'claim_token', '', 'claimed_at_ms', '0')
  redis.call('ZREM', Q.leases, lease(id, token))
  if delay > 0 then
    redis.call('HSET', key, 'status', 'scheduled', 'scheduled_for_ms', ms(now + delay))
    redis.call('ZADD', KEYS[7], ms(now + delay), id)
  else
    redis.call('LPUSH', Q.pending, id)
  end
  count('retried_total', 1)
  publish(id, 'retry')
  return 1
end
bury(id, reason, now, token)
return 2
