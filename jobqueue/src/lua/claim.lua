-- claim.lua: takes up to N jobs from pending and stamps each with a fresh
-- claim token and lease in the same step, so no sweep ever sees a claimed
-- job without its claim time (fixes reference bug 8.2, docs/reference-bugs.md#82-claim-is-not-atomic). Jobs that cannot run
-- are moved out of the way with a reason instead of being handed out; a job
-- past its expires_at_ms ends as expired (status cancelled, with the
-- reason), charged no attempt. A job unique while pending releases its
-- unique lock here (derived from the job-hash prefix: the documented
-- exception).
--
-- Every job the call may take is read and judged before anything is
-- written, so a bad job (numbers that are not decimal integers, a key that
-- is not a hash) never stops a batch half way. A job whose hash cannot be
-- read here (a cluster slot migration) ends the batch before it; it stays
-- first in pending.
--
-- KEYS[1]  pending list
-- KEYS[2]  processing list
-- KEYS[3]  leases sorted set ("id:token" -> lease deadline, ms)
-- KEYS[4]  failed list
-- KEYS[5]  stats hash
-- KEYS[6]  this request's key: a repeat of the same request (a retry after
--          its reply was lost) returns what the first one claimed instead of
--          claiming more jobs that nobody would run
-- KEYS[7]  paused flag: while it exists, nothing new is claimed
-- KEYS[8]  settled sorted set (a job failed here is recorded as a dead letter)
-- KEYS[9]  cancelled list (an expired job is listed there)
-- KEYS[10..] keys of earlier requests whose replies arrived: deleted here, so
--          request keys live only while a reply may still be lost
-- ARGV[1]  job hash prefix (ids come from pending, so their hash keys are
--          derived here: the documented exception)
-- ARGV[2]  events channel
-- ARGV[3]  default visibility ms, for jobs without a visibility_ms field
-- ARGV[4]  default max attempts, for jobs without a max_attempts field
-- ARGV[5]  failed history cap
-- ARGV[6]  mode: "lmove" or "rpoplpush" (Redis < 6.2) to take ids from
--          pending (both take a batch with one LTRIM and one LPUSH, which
--          every version has); "adopt" when ARGV[7] was already moved to
--          processing by a blocking BRPOPLPUSH and only needs its stamp
-- ARGV[7]  the id to adopt ("adopt" mode), else ignored
-- ARGV[8..] one fresh claim token per job wanted
-- Returns: { claimed, rejected }
--          claimed:  list of { id, token, claimed_at_ms, lease_deadline_ms,
--                    then REPLY_FIELDS: attempts (the new count),
--                    max_attempts, visibility_ms, payload, job,
--                    enqueued_at_ms }, false (nil) for a field the hash
--                    lacks
--          rejected: list of { id, outcome ("failed" | "dropped" |
--                    "expired"), reason }
--          or the string "paused" while the queue is paused

Q.prefix, Q.channel = ARGV[1], ARGV[2]
Q.pending, Q.processing, Q.leases, Q.failed, Q.stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
Q.settled, Q.cancelled = KEYS[8], KEYS[9]
Q.failed_cap = tonumber(ARGV[5])
local default_vis, default_max = ARGV[3], ARGV[4]
local mode = ARGV[6]
local request = KEYS[6]
-- Most unusable entries one call moves out of the way, so the work per call
-- stays bounded even when pending is full of them.
local BUDGET = 100

expect_queue_keys()
expect(request, 'string')
expect(Q.cancelled, 'list')
local now = now_ms()

-- The first write of every path below: the request keys of earlier claims
-- whose replies arrived.
local function forget_answered()
  for k = 10, #KEYS do
    if KEYS[k] ~= request then
      redis.call('DEL', KEYS[k])
    end
  end
end

-- The fields each reply entry carries after its id, token, claim time and
-- lease deadline, in this order (a field the hash lacks is false, a nil
-- bulk reply): those the runner reads. Not the whole hash: converting every
-- field into Lua and back cost more than the rest of the claim. The rest of
-- the stamp (status, claim_token, claimed_at_ms) is the entry's own; the
-- client fills it in. protocol.rs reads the same order.
local REPLY_FIELDS = { 'attempts', 'max_attempts', 'visibility_ms', 'payload', 'job', 'enqueued_at_ms' }

-- The reply entry for a claim this request made (its hash is here: it was
-- read before).
local function entry(id, token, claimed_at, deadline)
  local v = redis.call('HMGET', Q.prefix .. id, unpack(REPLY_FIELDS))
  return { id, token, claimed_at, deadline, v[1], v[2], v[3], v[4], v[5], v[6] }
end

-- A repeat comes first, paused or not: the jobs the first run took are this
-- request's, leased and charged an attempt; answering "paused" would leave
-- them to run out their lease unrun.
local previous = redis.call('GET', request)
if previous then
  local held = {}
  for pair in string.gmatch(previous, '%S+') do
    local id, token = string.match(pair, '^(.*):([^:]*)$')
    if id then
      local kind, f = read_job(Q.prefix .. id, 'claim_token', 'claimed_at_ms', 'status')
      local deadline = redis.call('ZSCORE', Q.leases, lease(id, token))
      if kind == 'hash' and f[1] == token and f[3] == 'processing' and deadline then
        held[#held + 1] = { id, token, f[2], ms(tonumber(deadline)) }
      end
    end
  end
  forget_answered()
  local claimed = {}
  for i, h in ipairs(held) do
    claimed[i] = entry(h[1], h[2], h[3], h[4])
  end
  return { claimed, {} }
end

if mode ~= 'adopt' and redis.call('EXISTS', KEYS[7]) == 1 then
  forget_answered()
  return 'paused'
end

-- Ids this call has decided to claim or fail, to catch an id listed twice.
local decided = {}

-- job_numbers of the job judged last, reused while the next job's stored
-- fields are the same strings: the jobs of a queue mostly share them, so
-- most jobs cost three comparisons instead of three pattern checks.
local last_fields, last_numbers = {}, {}
local function numbers(a, m, v)
  if a ~= last_fields[1] or m ~= last_fields[2] or v ~= last_fields[3] then
    last_fields = { a, m, v }
    last_numbers = { job_numbers(a, m, v, default_max, default_vis) }
  end
  return last_numbers[1], last_numbers[2], last_numbers[3]
end

-- Judges id, about to leave pending (or adopted): returns what to do with
-- it, or nil when its hash cannot be read here. ascii: id is known to be
-- plain ASCII (a whole window of ids is checked at once), so is_utf8 need
-- not look at it.
local function judge(id, ascii)
  -- One read: the fields judged here, and those the reply carries (f[3],
  -- f[4], f[7..9]).
  local key = Q.prefix .. id
  local kind, f = read_job(key, 'status', 'attempts', 'max_attempts', 'visibility_ms',
    'claim_token', 'unstamped_seen', 'payload', 'job', 'enqueued_at_ms', 'expires_at_ms',
    'unique_digest', 'unique_mode')
  if kind == 'elsewhere' then
    return nil
  elseif kind ~= 'hash' then
    return { action = 'dropped', reason = not_a_job(kind, f) }
  elseif decided[id] then
    return { action = 'dropped', reason = 'duplicate list entry: taken earlier in this call' }
  end
  local status = f[1]
  if status == 'completed' or status == 'failed' or status == 'cancelled' then
    return { action = 'dropped', reason = 'stale list entry: the job is already ' .. status }
  end
  if not ascii and not is_utf8(id) then
    decided[id] = true
    return { action = 'failed', reason = 'its id is not UTF-8, so no client can name it' }
  end
  local holder = f[5]
  if status == 'processing' and holder and holder ~= '' and redis.call('ZSCORE', Q.leases, lease(id, holder)) then
    -- Listed twice and held by a live or expiring claim of ours: the sweep
    -- owns that claim, so this extra entry goes.
    return { action = 'dropped', reason = 'duplicate list entry: the job is held by another claim' }
  end
  decided[id] = true
  local deadline = f[10] and expires_at(f[10])
  if deadline and now >= deadline then
    return { action = 'expired', reason = expired_reason(deadline) }
  end
  local attempts, max, vis = numbers(f[2], f[3], f[4])
  if attempts == nil then
    return { action = 'failed', reason = max }
  end
  if attempts >= max then
    -- Only a reclaim that does not count attempts (a reference sweeper) can
    -- put such a job back in pending: stop the poison loop here (reference bug 8.1, docs/reference-bugs.md#81-poison-jobs-loop-forever).
    return {
      action = 'failed',
      reason = string.format('attempt %d of %d never finished; no attempts left', attempts, max),
    }
  end
  return { action = 'claim', key = key, attempts = attempts, vis = vis, marked = f[6], fields = f }
end

local now_s = ms(now)

local claimed, rejected = {}, {}
-- The leases of the jobs claimed, added in one ZADD at the end.
local leases = {}
-- The claims made, as 'id:token', recorded under the request key.
local made = {}

-- Carries out what judge decided, for id, already out of pending (and, for
-- a claim, at the head of processing).
local function apply(id, step, token)
  if step.action == 'claim' then
    local key = step.key
    local attempts = ms_once(step.attempts + 1)
    redis.call('HSET', key, 'status', 'processing', 'attempts', attempts, 'claimed_at_ms', now_s,
      'claim_token', token)
    if step.marked then
      redis.call('HDEL', key, 'unstamped_seen')
    end
    if step.fields[12] == 'pending' then
      -- Unique while pending: a worker has it now.
      release_unique(id, step.fields[11], 'pending')
    end
    local deadline_s = ms_once(now + step.vis)
    local member = lease(id, token)
    leases[#leases + 1] = deadline_s
    leases[#leases + 1] = member
    made[#made + 1] = member
    -- REPLY_FIELDS, from what judge read.
    local f = step.fields
    claimed[#claimed + 1] = { id, token, now_s, deadline_s, attempts, f[3], f[4], f[7], f[8], f[9] }
  else
    if step.action == 'failed' then
      bury(id, step.reason, now, '')
    elseif step.action == 'expired' then
      end_cancelled(id, step.reason, now, '', 'expired_total')
    end
    rejected[#rejected + 1] = { id, step.action, step.reason }
  end
end

if mode == 'adopt' then
  local id, token = ARGV[7], ARGV[8]
  local step = judge(id, false)
  forget_answered()
  -- The id must still be where BRPOPLPUSH put it: a sweep may have moved it
  -- back to pending in between, and then it is not ours to stamp. An id
  -- whose hash cannot be read here stays there unstamped, for the sweep.
  if step and redis.call('LREM', Q.processing, 1, id) == 1 then
    if step.action == 'claim' then
      redis.call('LPUSH', Q.processing, id)
    end
    apply(id, step, token)
  end
else
  -- Read and judge first: the oldest ids, as many as the call may take
  -- (more only when some of them cannot be claimed).
  local plan = {}
  local t, budget, seen = 8, BUDGET, 0
  local more = true
  while more and t <= #ARGV and budget > 0 do
    local need = #ARGV - t + 1
    local window = redis.call('LRANGE', Q.pending, -(seen + need), -(seen + 1))
    local ascii = not string.find(table.concat(window), '[\128-\255]')
    more = #window == need
    for i = #window, 1, -1 do
      if t > #ARGV or budget == 0 then
        more = false
        break
      end
      local step = judge(window[i], ascii)
      if not step then
        more = false
        break
      end
      if step.action == 'claim' then
        step.token = ARGV[t]
        t = t + 1
      else
        budget = budget - 1
      end
      plan[#plan + 1] = { window[i], step }
    end
    seen = seen + #window
  end
  -- Then write. The plan is the oldest end of pending, in order: one LTRIM
  -- takes it off, one LPUSH lists the claimed ids in processing in the order
  -- one move per id would (on every Redis version).
  forget_answered()
  if #plan > 0 then
    redis.call('LTRIM', Q.pending, 0, -(#plan + 1))
    local moved = {}
    for _, p in ipairs(plan) do
      if p[2].action == 'claim' then
        moved[#moved + 1] = p[1]
      end
    end
    if #moved > 0 then
      redis.call('LPUSH', Q.processing, unpack(moved))
    end
  end
  for _, p in ipairs(plan) do
    apply(p[1], p[2], p[2].token)
  end
end
if #leases > 0 then
  redis.call('ZADD', Q.leases, unpack(leases))
end
if #made > 0 then
  -- Ids cannot hold spaces (see enqueue.rs): a space separates the claims.
  redis.call('SET', request, table.concat(made, ' '), 'PX', 60000)
end
return { claimed, rejected }
