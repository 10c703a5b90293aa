-- release.lua: hands a claimed job back to pending without charging the
-- attempt, at the front of the line (used when a runner shuts down).
--
-- KEYS[1]  job hash
-- KEYS[2]  processing list
-- KEYS[3]  pending list
-- KEYS[4]  leases sorted set
-- KEYS[5]  settled sorted set (this claim is recorded as ended)
-- ARGV[1]  job id
-- ARGV[2]  claim token
-- ARGV[3]  events channel
-- ARGV[4]  how long an ended claim is remembered, in ms
-- ARGV[5]  most ended claims remembered
-- Returns: 1 released; 0 the token does not hold the job; -1 already settled
--          with this token

Q.channel, Q.settled = ARGV[3], KEYS[5]
local key, id, token = KEYS[1], ARGV[1], ARGV[2]
if token == '' then
  return 0
end
expect(KEYS[2], 'list')
expect(KEYS[3], 'list')
expect(KEYS[4], 'zset')
expect(Q.settled, 'zset')
local kind, f = read_job(key, 'status', 'claim_token', 'settled_token', 'attempts')
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
redis.call('RPUSH', KEYS[3], id)
publish(id, 'released')
return 1
