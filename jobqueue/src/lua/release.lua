-- release.lua: hands a claimed job back to pending without charging the
-- attempt, at the front of the line (used when a runner shuts down). A job
-- whose cancel was requested while it ran ends as cancelled instead.
-- A job with a priority or a rate key goes to the front of its own lane instead of
-- pending (derived from the pending key: the documented exception, see
-- common.lua's flow-control helpers).
-- The claim's key lease goes with it, and a runner waiting under
-- max_running is woken.
--
-- KEYS[1]  job hash
-- KEYS[2]  processing list
-- KEYS[3]  pending list
-- KEYS[4]  leases sorted set
-- KEYS[5]  settled sorted set (this claim is recorded as ended)
-- KEYS[6]  cancelled list
-- KEYS[7]  stats hash
-- KEYS[8]  outbox sorted set (ends of batch children and chain steps)
-- KEYS[9]  outbox entries hash
-- ARGV[1]  job id
-- ARGV[2]  claim token
-- ARGV[3]  events channel
-- ARGV[4]  how long an ended claim is remembered, in ms
-- ARGV[5]  most ended claims remembered
-- ARGV[6]  job hash prefix (to delete the hashes of ids trimmed off the
--          cancelled history: the documented exception)
-- ARGV[7]  cancelled history cap (the dead letters' cap)
-- Returns: 1 released; 3 cancelled; 0 the token does not hold the job; -1
--          already settled with this token

Q.channel, Q.settled, Q.leases, Q.pending = ARGV[3], KEYS[5], KEYS[4], KEYS[3]
Q.prefix, Q.cancelled, Q.stats, Q.failed_cap = ARGV[6], KEYS[6], KEYS[7], tonumber(ARGV[7])
Q.outbox, Q.entries = KEYS[8], KEYS[9]
local key, id, token = KEYS[1], ARGV[1], ARGV[2]
if token == '' then
  return 0
end
expect(KEYS[2], 'list')
expect(KEYS[3], 'list')
expect(KEYS[4], 'zset')
expect(Q.settled, 'zset')
expect_ends()
expect(Q.stats, 'hash')
local kind, f = read_job(key, 'status', 'claim_token', 'settled_token', 'attempts',
  'cancel_requested_at_ms', 'cancel_reason')
if kind ~= 'hash' or f[2] ~= token then
  if (kind == 'hash' and f[3] == token) or redis.call('ZSCORE', Q.settled, lease(id, token)) then
    return -1
  end
  return 0
end
if f[1] ~= 'processing' then
  return 0
end
local now = now_ms()
-- The first write; nothing after it can fail.
if redis.call('LREM', KEYS[2], 1, id) == 0 then
  return 0
end
if f[5] then
  redis.call('HSET', key, 'settled_token', token)
  remember(id, token, now + tonumber(ARGV[4]))
  forget(now, tonumber(ARGV[5]))
  end_cancelled(id, f[6] or 'cancelled', now, token, 'cancelled_total')
  if redis.pcall('HDEL', queue_base() .. 'throttle', 'capped') == 1 then
    wake()
  end
  return 3
end
local fields = { 'status', 'pending', 'claim_token', '', 'claimed_at_ms', '0', 'settled_token', token }
-- The attempt is given back when attempts is a count; a malformed one is
-- left for the next claim to fail the job with the reason.
local attempts = integer(f[4], 0, MAX_COUNT)
if attempts then
  fields[#fields + 1] = 'attempts'
  fields[#fields + 1] = ms(math.max(attempts - 1, 0))
end
redis.call('HSET', key, unpack(fields))
redis.call('ZREM', KEYS[4], lease(id, token))
remember(id, token, now + tonumber(ARGV[4]))
forget(now, tonumber(ARGV[5]))
local priority, rate_key = lane_fields(id)
drop_key_lease(id, token, rate_key or false)
-- First in line in its lane (a reference worker's job goes back to pending).
make_ready(id, priority, rate_key, true)
if redis.pcall('HDEL', queue_base() .. 'throttle', 'capped') == 1 then
  wake()
end
publish(id, 'released')
return 1
