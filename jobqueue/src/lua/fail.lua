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
-- Returns: 1 retrying (pending now, or scheduled after the delay); 2 failed
--          for good; 0 the token does not hold the job; -1 already settled
--          with this token

Q.prefix, Q.channel = ARGV[8], ARGV[7]
Q.pending, Q.failed, Q.leases, Q.stats = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
Q.failed_cap = tonumber(ARGV[6])
local key, id, token = KEYS[1], ARGV[1], ARGV[2]
if token == '' then
  return 0
end
local f = redis.call('HMGET', key, 'status', 'claim_token', 'settled_token', 'attempts', 'max_attempts')
if f[2] ~= token then
  if f[3] == token then
    return -1
  end
  return 0
end
if f[1] ~= 'processing' or redis.call('LREM', KEYS[2], 1, id) == 0 then
  return 0
end
local now = now_ms()
redis.call('HSET', key, 'settled_token', token)
local attempts = tonumber(f[4]) or 0
local max = tonumber(f[5] or ARGV[5]) or tonumber(ARGV[5])
if ARGV[4] == 'retry' and attempts < max then
  redis.call('HSET', key, 'status', 'pending', 'last_error', ARGV[3], 'last_error_at_ms', ms(now),
    'claim_token', '', 'claimed_at_ms', '0')
  redis.call('ZREM', Q.leases, lease(id, token))
  local delay = tonumber(ARGV[9]) or 0
  if delay > 0 then
    redis.call('HSET', key, 'status', 'scheduled', 'scheduled_for_ms', ms(now + delay))
    redis.call('ZADD', KEYS[7], now + delay, id)
  else
    redis.call('LPUSH', Q.pending, id)
  end
  redis.call('HINCRBY', Q.stats, 'retried_total', 1)
  publish(id, 'retry')
  return 1
end
bury(id, ARGV[3], now, token)
return 2
