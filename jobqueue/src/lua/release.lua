-- release.lua: hands a claimed job back to pending without charging the
-- attempt, at the front of the line (used when a runner shuts down).
--
-- KEYS[1]  job hash
-- KEYS[2]  processing list
-- KEYS[3]  pending list
-- KEYS[4]  leases sorted set
-- ARGV[1]  job id
-- ARGV[2]  claim token
-- ARGV[3]  events channel
-- Returns: 1 released; 0 the token does not hold the job; -1 already settled
--          with this token

Q.channel = ARGV[3]
local key, id, token = KEYS[1], ARGV[1], ARGV[2]
if token == '' then
  return 0
end
local f = redis.call('HMGET', key, 'status', 'claim_token', 'settled_token', 'attempts')
if f[2] ~= token then
  if f[3] == token then
    return -1
  end
  return 0
end
if f[1] ~= 'processing' or redis.call('LREM', KEYS[2], 1, id) == 0 then
  return 0
end
local attempts = math.max((tonumber(f[4]) or 1) - 1, 0)
redis.call('HSET', key, 'status', 'pending', 'attempts', ms(attempts), 'claim_token', '',
  'claimed_at_ms', '0', 'settled_token', token)
redis.call('ZREM', KEYS[4], lease(id, token))
redis.call('RPUSH', KEYS[3], id)
publish(id, 'released')
return 1
