-- extend.lua: renews the leases of running jobs, a batch per call. Each
-- renewal is fenced by its claim token. claimed_at_ms moves forward too, so
-- reference sweepers (which only read claimed_at_ms) leave the job alone as
-- long as renewals come more often than their visibility timeout (5 s by
-- default): a fleet shared with them should keep leases at 15 s or less,
-- which a runner renews every third of a lease.
--
-- KEYS[1]   leases sorted set
-- KEYS[2..] one job hash per job, in the order of the pairs in ARGV
-- ARGV[1]   default visibility ms, for jobs without a visibility_ms field
-- ARGV[2..] per job: id, claim token
-- Returns:  per job, the new lease deadline in ms (a string), or 0 when the
--           token no longer holds the job

local now = now_ms()
local out = {}
for k = 2, #KEYS do
  local key = KEYS[k]
  local id, token = ARGV[2 * k - 2], ARGV[2 * k - 1]
  local f = redis.call('HMGET', key, 'status', 'claim_token', 'visibility_ms')
  if token ~= '' and f[2] == token and f[1] == 'processing' then
    local deadline = now + (tonumber(f[3] or ARGV[1]) or tonumber(ARGV[1]))
    redis.call('ZADD', KEYS[1], deadline, lease(id, token))
    redis.call('HSET', key, 'claimed_at_ms', ms(now))
    out[#out + 1] = ms(deadline)
  else
    out[#out + 1] = 0
  end
end
return out
