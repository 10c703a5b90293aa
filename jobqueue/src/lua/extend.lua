-- extend.lua: renews the leases of running jobs, a batch per call. Each
-- renewal is fenced by its claim token. claimed_at_ms moves forward too, so
-- reference sweepers (which only read claimed_at_ms) leave the job alone as
-- long as renewals come more often than their visibility timeout (5 s by
-- default): a fleet shared with them should keep leases at 15 s or less,
-- which a runner renews every third of a lease.
--
-- A claim holds its job while the token matches, the status is processing
-- and the claim is listed in processing. The lease stands for the listing:
-- a claim of ours has its lease in the leases set exactly while it is
-- listed (claim adds both, every settle and the sweep take both away), so
-- the check is one ZSCORE, not an O(N) search of the list. Only a claim
-- made by another client (no lease of ours) is looked up in the list.
--
-- KEYS[1]   leases sorted set
-- KEYS[2]   processing list
-- KEYS[3..] one job hash per job, in the order of the pairs in ARGV
-- ARGV[1]   default visibility ms, for jobs without a usable visibility_ms
-- ARGV[2..] per job: id, claim token
-- Returns:  per job, the new lease deadline in ms (a string); -1 when the
--           lease was renewed and a cancel of the job was requested (the
--           runner stops the run: this reply is how a cancel reaches it,
--           within one renewal tick, even with pub/sub down); 0 when the
--           claim no longer holds the job

expect(KEYS[1], 'zset')
expect(KEYS[2], 'list')
local now = now_ms()
local out, renew = {}, {}
for k = 3, #KEYS do
  local key = KEYS[k]
  local id, token = ARGV[2 * k - 4], ARGV[2 * k - 3]
  local kind, f = read_job(key, 'status', 'claim_token', 'visibility_ms', 'cancel_requested_at_ms')
  local holds = kind == 'hash' and token ~= '' and f[2] == token and f[1] == 'processing'
  if holds and not redis.call('ZSCORE', KEYS[1], lease(id, token)) then
    -- No lease of ours: a claim made by another client, still listed?
    -- (Before Redis 6.0.6 there is no LPOS: such a claim is taken as listed.)
    local at = redis.pcall('LPOS', KEYS[2], id)
    holds = type(at) == 'number' or type(at) == 'table'
  end
  if holds then
    local vis = integer(f[3], MIN_VISIBILITY_MS, MAX_DURATION_MS) or tonumber(ARGV[1])
    renew[#renew + 1] = { key, lease(id, token), now + vis }
    if f[4] then
      out[#out + 1] = -1
    else
      out[#out + 1] = ms(now + vis)
    end
  else
    out[#out + 1] = 0
  end
end
-- Every claim was judged; now the writes, none of which can fail.
for _, r in ipairs(renew) do
  redis.call('ZADD', KEYS[1], ms(r[3]), r[2])
  redis.call('HSET', r[1], 'claimed_at_ms', ms(now))
end
return out
