-- settle.lua: settles a batch of claimed jobs of one queue in one call,
-- each completed, failed for another attempt (back to pending, or scheduled
-- after a delay), failed for good, or snoozed (back to pending or scheduled
-- without charging the attempt). Fenced by each claim's token and safe
-- to repeat (fixes reference bug 8.3, docs/reference-bugs.md#83-complete-is-not-idempotent;
-- reference bug 8.4, docs/reference-bugs.md#84-empty-tokens-match-unclaimed-jobs).
-- Whether a failed job is retried is decided here from its stored attempts
-- and max_attempts (fixes reference bug 8.13, docs/reference-bugs.md#813-retry-policy-is-decided-by-the-client).
--
-- One call for many jobs is the point: the fixed price of a script call,
-- TIME, the key checks, the counters, the settled-set upkeep and the
-- history trim are paid once per batch, not once per job. Each job still
-- gets its own hash write and its own event, in the reference shape.
--
-- A job whose cancel was requested while it ran ends as cancelled however
-- its handler returned, and is never retried. A retry or snooze whose next
-- run would start at or after the job's expires_at_ms ends it as expired
-- (status cancelled, with the reason). A snooze past the queue's cap on
-- snoozes sends the job to the dead letters.
--
-- A unique job's lock is released when it completes, fails for good or is
-- cancelled (it is derived from the job-hash prefix: the documented
-- exception); a retry or snooze keeps it.
--
-- A job back for another run goes to its lane (its priority's or its rate
-- key's, derived from the pending key: the documented exception); a settled
-- claim drops its key lease, and slots freed under max_running wake a
-- waiting runner (the throttle hash's capped flag).
--
-- A child of a batch or a step of a chain that ends here (completed,
-- failed for good, cancelled or expired) leaves its outbox entry in this
-- same call (report_end in common.lua).
--
-- Every job is read and judged before the first write.
--
-- KEYS[1]  processing list
-- KEYS[2]  pending list
-- KEYS[3]  completed list
-- KEYS[4]  failed list
-- KEYS[5]  leases sorted set ("id:token" -> deadline)
-- KEYS[6]  stats hash
-- KEYS[7]  scheduled sorted set (id -> due time, ms)
-- KEYS[8]  settled sorted set (each claim settled here is recorded as ended)
-- KEYS[9]  cancelled list
-- KEYS[10] outbox sorted set (ends of batch children and chain steps)
-- KEYS[11] outbox entries hash
-- KEYS[12..] the job hash of each settlement, in order
-- ARGV[1]  job hash prefix (to delete the hashes of ids trimmed off a
--          history: the documented exception)
-- ARGV[2]  events channel
-- ARGV[3]  the queue's completed TTL in seconds (0 = keep until trimmed off
--          the history), for jobs without their own completed_ttl_s field
-- ARGV[4]  completed history cap
-- ARGV[5]  failed history cap
-- ARGV[6]  default max attempts, for jobs without a max_attempts field
-- ARGV[7]  how long an ended claim is remembered, in ms, at least (a
--          completed job's own TTL when longer)
-- ARGV[8]  most ended claims remembered
-- ARGV[9]  most snoozes a job may take; the next one is a failure for good
-- ARGV[10..] five per settlement, in the order of KEYS[12..]:
--          job id; claim token; "complete", "retry" (retry while attempts
--          remain), "permanent" (fail now), "snooze" or "throttle" (an
--          upstream rate limit: a snooze to the front of the job's lane that
--          holds the queue, or the job's rate key, back for the delay); the
--          result JSON (complete) or the error text (stored as last_error;
--          unused by a snooze); the delay in ms of a retry or snooze (0:
--          back to its lane now, else scheduled) or of a throttle's hold
-- Returns: one code per settlement: 1 completed (complete) or retrying
--          (retry); 2 failed for good; 3 cancelled or expired; 4 snoozed;
--          0 the token does not hold the job (empty, stale, or the job is
--          not in processing); -1 already settled with this token

Q.prefix, Q.channel = ARGV[1], ARGV[2]
Q.processing, Q.pending, Q.failed, Q.leases, Q.stats = KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6]
Q.settled, Q.cancelled = KEYS[8], KEYS[9]
Q.outbox, Q.entries = KEYS[10], KEYS[11]
Q.failed_cap = tonumber(ARGV[5])
local completed, scheduled = KEYS[3], KEYS[7]
local queue_ttl = math.min(tonumber(ARGV[3]), MAX_TTL_S)
local completed_cap, default_max = tonumber(ARGV[4]), ARGV[6]
local keep, settled_cap = tonumber(ARGV[7]), tonumber(ARGV[8])
local max_snoozes = tonumber(ARGV[9])
-- The fixed KEYS and ARGV before the per-settlement ones.
local FIXED, FIXED_ARGV = 11, 9
local n = #KEYS - FIXED

expect(Q.processing, 'list')
expect(Q.pending, 'list')
expect(completed, 'list')
expect(Q.failed, 'list')
expect(Q.leases, 'zset')
expect(Q.stats, 'hash')
expect(scheduled, 'zset')
expect(Q.settled, 'zset')
expect_ends()
-- The clock is read first (a read): whether a retry or snooze would start
-- past its job's deadline is judged with it.
local now = now_ms()
local now_s = ms(now)

-- Holds the queue (or rate key k) back until the time given: no claim
-- takes its jobs before then. A later hold never shortens an earlier one.
local function hold_back(k, until_ms)
  local throttle = queue_base() .. 'throttle'
  local field = rate_key_ok(k) and 'until:' .. k or 'until'
  local held = redis.pcall('HGET', throttle, field)
  held = type(held) == 'string' and tonumber(held) or 0
  if until_ms > held then
    redis.pcall('HSET', throttle, field, ms(until_ms))
  end
end

-- Read and judge every settlement.
local codes, plan = {}, {}
-- The token of each job this call will settle: a second entry for the same
-- job is a repeat (same token) or a stale claim (another token).
local taken = {}
for i = 1, n do
  local at = FIXED_ARGV + (i - 1) * 5
  local s = {
    i = i, key = KEYS[FIXED + i], id = ARGV[at + 1], token = ARGV[at + 2],
    action = ARGV[at + 3], data = ARGV[at + 4], delay = ARGV[at + 5],
  }
  codes[i] = 0
  if s.token == '' then
    -- An empty token holds nothing (reference bug 8.4).
  elseif taken[s.id] then
    if taken[s.id] == s.token then
      codes[i] = -1
    end
  else
    local kind, f = read_job(s.key, 'status', 'claim_token', 'settled_token', 'completed_ttl_s',
      'attempts', 'max_attempts', 'expires_at_ms', 'cancel_requested_at_ms', 'cancel_reason', 'snoozes',
      'unique_digest', 'unique_mode', 'priority', 'rate_key', 'batch', 'chain')
    if kind ~= 'hash' or f[2] ~= s.token then
      if (kind == 'hash' and f[3] == s.token) or redis.call('ZSCORE', Q.settled, lease(s.id, s.token)) then
        codes[i] = -1
      end
    elseif f[1] == 'processing' then
      taken[s.id] = s.token
      s.unique_digest, s.unique_mode = f[11], f[12]
      s.priority, s.rate_key = f[13], f[14] or false
      s.batch, s.chain = f[15] or false, f[16] or false
      if s.action == 'throttle' then
        -- An upstream rate limit: a snooze to the front of the job's lane,
        -- with the queue (or the job's rate key) held back meanwhile.
        s.action, s.front = 'snooze', true
      end
      local deadline = expires_at(f[7])
      s.delay = math.min(integer(s.delay, 0, MAX_DURATION_MS) or 0, MAX_DURATION_MS)
      if f[8] then
        -- A cancel was asked for while it ran: cancelled, however it ended.
        s.cancel = f[9] or 'cancelled'
      elseif s.action == 'snooze' then
        local snoozes = integer(f[10] or '0', 0, MAX_COUNT) or 0
        if snoozes >= max_snoozes then
          s.bury = string.format('snoozed %d times: no snoozes left (the cap is %d)', snoozes, max_snoozes)
        elseif deadline and now + s.delay >= deadline then
          s.expire = deadline
        else
          s.snoozes = ms(snoozes + 1)
          -- The claim charged an attempt; a snooze gives it back (a
          -- malformed count is left for the next claim to judge).
          local attempts = integer(f[5], 0, MAX_COUNT)
          s.attempts = attempts and ms(math.max(attempts - 1, 0))
        end
      elseif s.action == 'complete' then
        -- The job's own TTL when it is a whole number of seconds, else the queue's.
        s.ttl = integer(f[4], 0, MAX_TTL_S) or queue_ttl
      else
        -- Numbers that are not decimal integers cannot decide a retry: the
        -- job is failed for good, with both reasons.
        s.retry = false
        if s.action == 'retry' then
          local attempts, max = job_numbers(f[5], f[6], nil, default_max, ms(MIN_VISIBILITY_MS))
          if attempts == nil then
            s.data = s.data .. '; not retried: ' .. max
          else
            s.retry = attempts < max
          end
        end
        if s.retry and deadline and now + s.delay >= deadline then
          -- The next attempt would start too late: the job expires.
          s.retry = false
          s.expire = deadline
        end
      end
      plan[#plan + 1] = s
    end
  end
end
if #plan == 0 then
  return codes
end

-- Then the writes, none of which can fail.
local done, leases, ended = {}, {}, {}
-- True once a lease is dropped here (in leases, or by bury).
local freed = false
local retried, snoozed = 0, 0
for _, s in ipairs(plan) do
  -- Claims are pushed at the head of processing and mostly settle oldest
  -- first: looking from the tail finds them sooner.
  if redis.call('LREM', Q.processing, -1, s.id) == 1 then
    local until_ms = now + keep
    local member = lease(s.id, s.token)
    if s.cancel or s.expire then
      redis.call('HSET', s.key, 'settled_token', s.token)
      leases[#leases + 1] = member
      if s.cancel then
        end_cancelled(s.id, s.cancel, now, '', 'cancelled_total')
      else
        end_cancelled(s.id, expired_reason(s.expire), now, '', 'expired_total')
      end
      codes[s.i] = 3
    elseif s.action == 'snooze' and not s.bury then
      local fields = { 'status', 'pending', 'claim_token', '', 'claimed_at_ms', '0', 'settled_token', s.token,
        'snoozes', s.snoozes }
      if s.attempts then
        fields[#fields + 1] = 'attempts'
        fields[#fields + 1] = s.attempts
      end
      if s.delay > 0 and not s.front then
        fields[2] = 'scheduled'
        fields[#fields + 1] = 'scheduled_for_ms'
        fields[#fields + 1] = ms(now + s.delay)
      end
      redis.call('HSET', s.key, unpack(fields))
      if s.front then
        make_ready(s.id, s.priority, s.rate_key, true)
        hold_back(s.rate_key, now + s.delay)
      elseif s.delay > 0 then
        redis.call('ZADD', scheduled, ms(now + s.delay), s.id)
      else
        make_ready(s.id, s.priority, s.rate_key, false)
      end
      leases[#leases + 1] = member
      snoozed = snoozed + 1
      publish(s.id, 'snoozed')
      codes[s.i] = 4
    elseif s.action == 'complete' then
      redis.call('HSET', s.key, 'status', 'completed', 'completed_at_ms', now_s, 'result', s.data,
        'claim_token', '', 'settled_token', s.token)
      if s.ttl > 0 then
        redis.call('EXPIRE', s.key, s.ttl)
      end
      until_ms = now + math.max(keep, s.ttl * 1000)
      release_unique(s.id, s.unique_digest, s.unique_mode)
      report_end(s.id, 'ok', s.data, now, s.batch, s.chain)
      leases[#leases + 1] = member
      done[#done + 1] = s.id
      codes[s.i] = 1
    elseif s.retry then
      redis.call('HSET', s.key, 'status', 'pending', 'last_error', s.data, 'last_error_at_ms', now_s,
        'claim_token', '', 'claimed_at_ms', '0', 'settled_token', s.token)
      leases[#leases + 1] = member
      if s.delay > 0 then
        redis.call('HSET', s.key, 'status', 'scheduled', 'scheduled_for_ms', ms(now + s.delay))
        redis.call('ZADD', scheduled, ms(now + s.delay), s.id)
      else
        make_ready(s.id, s.priority, s.rate_key, false)
      end
      retried = retried + 1
      publish(s.id, 'retry')
      codes[s.i] = 1
    else
      redis.call('HSET', s.key, 'settled_token', s.token)
      bury(s.id, s.bury or s.data, now, s.token)
      -- bury dropped the lease (not listed again: a second ZREM of a key
      -- the first emptied fails on a node whose slot is migrating).
      freed = true
      codes[s.i] = 2
    end
    ended[#ended + 1] = ms_once(until_ms)
    ended[#ended + 1] = member
    drop_key_lease(s.id, s.token, s.rate_key)
  end
end
if #leases > 0 then
  redis.call('ZREM', Q.leases, unpack(leases))
  freed = true
end
-- A claim refused at the queue's max_running left the flag: the slots
-- freed here wake a runner waiting for one.
if freed and redis.pcall('HDEL', queue_base() .. 'throttle', 'capped') == 1 then
  wake()
end
if #ended > 0 then
  redis.call('ZADD', Q.settled, unpack(ended))
  forget(now, settled_cap)
end
if retried > 0 then
  count('retried_total', retried)
end
if snoozed > 0 then
  count('snoozed_total', snoozed)
end
if #done > 0 then
  push_history(completed, done, completed_cap, 'completed')
  count('completed_total', #done)
  for _, id in ipairs(done) do
    publish(id, 'completed')
  end
end
return codes
