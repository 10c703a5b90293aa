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
-- The renewal also carries each job's progress (JobContext::progress): the
-- latest value its run reported since the last call, or "" for none. A
-- runner renews every running job anyway, so progress costs no round trip
-- of its own. The value is written (fields progress and progress_at_ms)
-- only while the claim holds the job, and only when it differs from the
-- stored one; then, and only then, it is published on the progress channel
-- as {"id":...,"progress":<value>}. The events channel is not used: its
-- subscribers expect the reference's {"id","status"} messages only.
--
-- KEYS[1]   leases sorted set
-- KEYS[2]   processing list
-- KEYS[3..] one job hash per job, in the order of the triples in ARGV
-- ARGV[1]   default visibility ms, for jobs without a usable visibility_ms
-- ARGV[2]   the progress channel (queue:{name}:progress)
-- ARGV[3..] per job: id, claim token, progress (JSON text, checked to be
--           JSON by the caller, at most MAX_PROGRESS_BYTES bytes; "" when
--           the run reported nothing new)
-- Returns:  per job, the new lease deadline in ms (a string); -1 when the
--           lease was renewed and a cancel of the job was requested (the
--           runner stops the run: this reply is how a cancel reaches it,
--           within one renewal tick, even with pub/sub down); 0 when the
--           claim no longer holds the job (its progress is not written)

-- The most bytes of JSON a job's progress may hold: the runtime's
-- MAX_PROGRESS_BYTES (a unit test in queue/progress.rs checks they agree).
-- Progress is rewritten and published while the job runs, so it stays small.
local MAX_PROGRESS_BYTES = 4096

-- Everything is checked before the first write: the arguments' shape and
-- every progress value's size (a caller of ours never sends more), then
-- the keys' types.
if #ARGV ~= 2 + 3 * (#KEYS - 2) then
  return redis.error_reply('ERR extend.lua takes an id, a token and a progress value per job hash: got ' ..
    #ARGV .. ' arguments for ' .. (#KEYS - 2) .. ' jobs')
end
for k = 3, #KEYS do
  local progress = ARGV[3 * (k - 2) + 2]
  if #progress > MAX_PROGRESS_BYTES then
    return redis.error_reply('ERR the progress of job ' .. ARGV[3 * (k - 2)] .. ' is ' .. #progress ..
      ' bytes, over the limit of ' .. MAX_PROGRESS_BYTES)
  end
end
expect(KEYS[1], 'zset')
expect(KEYS[2], 'list')
local now = now_ms()
local out, renew = {}, {}
for k = 3, #KEYS do
  local key = KEYS[k]
  local at = 3 * (k - 2)
  local id, token, progress = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  -- The stored progress is read only when there is a value to compare.
  local kind, f
  if progress == '' then
    kind, f = read_job(key, 'status', 'claim_token', 'visibility_ms', 'cancel_requested_at_ms')
  else
    kind, f = read_job(key, 'status', 'claim_token', 'visibility_ms', 'cancel_requested_at_ms', 'progress')
  end
  local holds = kind == 'hash' and token ~= '' and f[2] == token and f[1] == 'processing'
  if holds and not redis.call('ZSCORE', KEYS[1], lease(id, token)) then
    -- No lease of ours: a claim made by another client, still listed?
    -- (Before Redis 6.0.6 there is no LPOS: such a claim is taken as listed.)
    local listed_at = redis.pcall('LPOS', KEYS[2], id)
    holds = type(listed_at) == 'number' or type(listed_at) == 'table'
  end
  if holds then
    local vis = integer(f[3], MIN_VISIBILITY_MS, MAX_DURATION_MS) or tonumber(ARGV[1])
    local changed = progress ~= '' and f[5] ~= progress
    renew[#renew + 1] = { key, lease(id, token), now + vis, id, changed and progress or nil }
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
  if r[5] then
    redis.call('HSET', r[1], 'claimed_at_ms', ms(now), 'progress', r[5], 'progress_at_ms', ms(now))
  else
    redis.call('HSET', r[1], 'claimed_at_ms', ms(now))
  end
end
for _, r in ipairs(renew) do
  if r[5] then
    redis.call('PUBLISH', ARGV[2], '{"id":' .. cjson.encode(r[4]) .. ',"progress":' .. r[5] .. '}')
  end
end
return out
