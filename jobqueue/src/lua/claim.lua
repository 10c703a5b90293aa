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
-- KEYS[10] outbox sorted set (ends of batch children and chain steps)
-- KEYS[11] outbox entries hash
-- KEYS[12..] keys of earlier requests whose replies arrived: deleted here, so
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
--                    enqueued_at_ms, traceparent, tracestate,
--                    scheduled_for_ms }, false
--                    (nil) for a field the hash lacks
--          rejected: list of { id, outcome ("failed" | "dropped" |
--                    "expired"), reason }
--          hold, hold_ms: why the call took fewer jobs than it asked
--          for although some may wait, and for how long (ms):
--            ""          nothing held it back (the lanes ran out);
--            "throttled" the queue's rate limit (or a handler's report of
--                        an upstream limit): claim again after hold_ms,
--                        not before;
--            "capped"    the queue's max_running: wait on the wake list,
--                        which a settle freeing a slot feeds, at most
--                        hold_ms (the earliest lease deadline);
--            "keys"      rate keys with jobs wait for their own limits:
--                        the first is ready in hold_ms
--          or the string "paused" while the queue is paused
--
-- Flow control (docs/data-model.md#flow-control): the call reads the
-- queue's limits hash, its throttle state and the lanes before it writes.
-- It takes at most min(tokens, the rate limit's budget, max_running minus
-- the leases held) jobs: from the priority lanes highest first (pending is
-- level 0), then from the lanes of rate keys that are ready, round-robin,
-- each within its own key's limits. A job taken from a key's lane is also
-- leased in that key's lease set. Only jobs claimed are charged to a rate.
-- Malformed limits refuse the claim with an error and write nothing
-- (claiming past a third party's limit is the failure to avoid).

Q.prefix, Q.channel = ARGV[1], ARGV[2]
Q.pending, Q.processing, Q.leases, Q.failed, Q.stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
Q.settled, Q.cancelled = KEYS[8], KEYS[9]
Q.outbox, Q.entries = KEYS[10], KEYS[11]
Q.failed_cap = tonumber(ARGV[5])
local default_vis, default_max = ARGV[3], ARGV[4]
local mode = ARGV[6]
local request = KEYS[6]
-- Most unusable entries one call moves out of the way, so the work per call
-- stays bounded even when pending is full of them.
local BUDGET = 100

expect_queue_keys()
expect(request, 'string')
expect_ends()
local now = now_ms()

-- The first write of every path below: the request keys of earlier claims
-- whose replies arrived.
local function forget_answered()
  for k = 12, #KEYS do
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
local REPLY_FIELDS = { 'attempts', 'max_attempts', 'visibility_ms', 'payload', 'job', 'enqueued_at_ms', 'traceparent', 'tracestate', 'scheduled_for_ms' }

-- The reply entry for a claim this request made (its hash is here: it was
-- read before).
local function entry(id, token, claimed_at, deadline)
  local v = redis.call('HMGET', Q.prefix .. id, unpack(REPLY_FIELDS))
  return { id, token, claimed_at, deadline, v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9] }
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

-- Limits, read and checked before anything is written.
local base = queue_base()
local throttle = base .. 'throttle'
local keyset = base .. 'keys'

-- A rate limit from its stored fields: the emission interval T (ms per
-- job) and the tolerance tau = (burst - 1) * T of the generic cell rate
-- algorithm, or nil when no rate is set. Stops the script (nothing written)
-- when a field is malformed.
local function rate_of(rate, period, burst, what)
  if not rate then
    return nil
  end
  local r = integer(rate, 1, MAX_COUNT)
  local p = integer(period or '1000', 1, MAX_DURATION_MS)
  local b = integer(burst or '1', 1, MAX_COUNT)
  if not (r and p and b) then
    local shown = function(v)
      return v and ('"' .. tostring(v) .. '"') or 'unset'
    end
    error(redis.error_reply('ERR limits: ' .. what .. ' rate ' .. shown(rate) .. ', period_ms ' .. shown(period) ..
      ', burst ' .. shown(burst) .. ': not whole numbers of at least 1; nothing claimed'))
  end
  local T = p / r
  return { T = T, tau = (b - 1) * T }
end

local function cap_of(value, what)
  if not value then
    return nil
  end
  local c = integer(value, 1, MAX_COUNT)
  if not c then
    error(redis.error_reply('ERR limits: ' .. what .. ' max_running "' .. tostring(value) ..
      '" is not a positive integer; nothing claimed'))
  end
  return c
end

-- A stored time (ms, possibly with a fraction); 0 when absent or malformed
-- (a lost throttle state lets a few jobs more through, never fewer).
local function stamp(value)
  if type(value) == 'string' and string.find(value, '^%d+%.?%d*$') and #value <= 24 then
    return tonumber(value)
  end
  return 0
end

-- How many of n jobs a rate lets start now, and when none, how long until
-- one may (ms). tat: the theoretical arrival time stored for it.
local function gcra(rate, tat, n)
  if not rate then
    return n, 0
  end
  local start = math.max(tat, now)
  if start > now + rate.tau then
    return 0, math.ceil(start - rate.tau - now)
  end
  return math.min(n, math.floor((now + rate.tau - start) / rate.T) + 1), 0
end

-- How long until the earliest of a lease set's deadlines (ZRANGE 0 0
-- WITHSCORES): the latest a waiter under a cap waits before looking again.
-- A deadline already past (a lease the sweep has not taken back yet, a
-- renewed claim whose key lease kept its first deadline) says nothing:
-- a second then, never a busy loop.
local function until_first(first)
  local deadline = first[2] and tonumber(first[2])
  if deadline and deadline > now then
    return math.ceil(deadline - now)
  end
  return 1000
end

-- The TAT after c jobs started under rate.
local function charged(rate, tat, c)
  return string.format('%.3f', math.max(tat, now) + c * rate.T)
end

local L = redis.call('HMGET', base .. 'limits', 'rate', 'period_ms', 'burst', 'max_running',
  'key_rate', 'key_period_ms', 'key_burst', 'key_max_running')
local qrate = rate_of(L[1], L[2], L[3], 'queue')
local qcap = cap_of(L[4], 'queue')
local key_defaults = { L[5], L[6], L[7], L[8] }
local TS = redis.call('HMGET', throttle, 'tat', 'until')
local qtat = stamp(TS[1])

local want = #ARGV - 7
local room, hold, hold_ms = want, '', 0
local blocked_until = stamp(TS[2])
if blocked_until > now then
  room, hold, hold_ms = 0, 'throttled', math.ceil(blocked_until - now)
end
local rate_room, rate_wait = gcra(qrate, qtat, room)
if rate_room < room then
  room = rate_room
  if room == 0 then
    hold, hold_ms = 'throttled', rate_wait
  end
end
local running = 0
if qcap then
  running = redis.call('ZCARD', Q.leases)
  if qcap - running < room then
    room = math.max(qcap - running, 0)
    if room == 0 then
      local first = redis.call('ZRANGE', Q.leases, 0, 0, 'WITHSCORES')
      hold, hold_ms = 'capped', math.max(until_first(first), 1)
    end
  end
end
if room == 0 then
  forget_answered()
  if hold == 'capped' then
    redis.pcall('HSET', throttle, 'capped', '1')
  end
  if mode == 'adopt' and redis.call('LREM', Q.processing, 1, ARGV[7]) == 1 then
    -- BRPOPLPUSH took it before the limits were known: it goes back first
    -- in line, unclaimed.
    redis.call('RPUSH', Q.pending, ARGV[7])
  end
  return { {}, {}, hold, hold_ms }
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
  -- f[4], f[7..9], f[13..15]).
  local key = Q.prefix .. id
  local kind, f = read_job(key, 'status', 'attempts', 'max_attempts', 'visibility_ms',
    'claim_token', 'unstamped_seen', 'payload', 'job', 'enqueued_at_ms', 'expires_at_ms',
    'unique_digest', 'unique_mode', 'traceparent', 'tracestate', 'scheduled_for_ms')
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
    if step.rate_key then
      redis.pcall('ZADD', key_leases(step.rate_key), deadline_s, member)
    end
    made[#made + 1] = member
    -- REPLY_FIELDS, from what judge read.
    local f = step.fields
    claimed[#claimed + 1] = { id, token, now_s, deadline_s, attempts, f[3], f[4], f[7], f[8], f[9], f[13], f[14], f[15] }
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
    if qrate and step.action == 'claim' then
      redis.pcall('HSET', throttle, 'tat', charged(qrate, qtat, 1))
    end
  end
else
  -- Read and judge first: the oldest ids of each lane, as many as the call
  -- may take (more only when some of them cannot be claimed).
  local plan = {}
  local t, budget = 8, BUDGET
  -- Stops taking when a job's hash cannot be read here (a slot migration):
  -- it stays first in its lane.
  local stopped = false
  local claims = 0
  -- How many entries each lane gives up (to trim), by lane.
  local trims, trim_order = {}, {}

  -- Takes up to limit claims from the oldest end of list into the plan;
  -- returns the claims taken and whether the lane ran out.
  local function take(list, limit, rate_key)
    local took, seen = 0, 0
    local more, empty = true, false
    while more and took < limit and t <= #ARGV and budget > 0 do
      local need = math.min(limit - took, #ARGV - t + 1)
      local window = redis.pcall('LRANGE', list, -(seen + need), -(seen + 1))
      if type(window) == 'table' and window.err then
        if list == Q.pending then
          error(window)
        end
        -- A lane key of another type (written by hand): nothing to take
        -- there; the jobs that could not be put in it wait in pending.
        window = {}
      end
      local ascii = not string.find(table.concat(window), '[\128-\255]')
      more = #window == need
      empty = #window < need
      for i = #window, 1, -1 do
        if t > #ARGV or budget == 0 or took >= limit then
          more, empty = false, false
          break
        end
        local step = judge(window[i], ascii)
        if not step then
          more, empty, stopped = false, false, true
          break
        end
        if step.action == 'claim' then
          step.token = ARGV[t]
          step.rate_key = rate_key
          t = t + 1
          took = took + 1
        else
          budget = budget - 1
        end
        plan[#plan + 1] = { window[i], step }
        if not trims[list] then
          trims[list] = 0
          trim_order[#trim_order + 1] = list
        end
        trims[list] = trims[list] + 1
      end
      seen = seen + #window
    end
    claims = claims + took
    return took, empty
  end

  -- The priority lanes with jobs, highest first (levels other than 0 only
  -- when `levels` lists them).
  local waiting = false
  local listed = {}
  local members = redis.pcall('SMEMBERS', levels_key())
  for _, level in ipairs(members.err and {} or members) do
    listed[level] = true
  end
  local drained = {}
  for p = MAX_PRIORITY, MIN_PRIORITY, -1 do
    local list = p == 0 and Q.pending or Q.pending .. ':' .. ms(p)
    if p == 0 or listed[ms(p)] then
      if stopped or claims >= room then
        local len = redis.pcall('LLEN', list)
        waiting = waiting or (p ~= 0 and type(len) == 'number' and len > (trims[list] or 0))
      else
        local took, empty = take(list, room - claims, nil)
        waiting = waiting or (p ~= 0 and not empty)
        if p ~= 0 and empty and took == 0 and not trims[list] then
          -- Nothing there: the level leaves `levels`.
          drained[#drained + 1] = ms(p)
        end
      end
    end
  end

  -- Then the lanes of rate keys that are ready, oldest-ready first; each key
  -- within its own limits. What changes for each key is written after the
  -- reads: its score (when it is ready again), its TAT.
  local key_writes = {}
  local key_wait = nil
  local KEYS_PER_CALL = 32
  local ready_keys = {}
  if not stopped and claims < room then
    ready_keys = redis.pcall('ZRANGEBYSCORE', keyset, '-inf', now, 'LIMIT', 0, KEYS_PER_CALL)
    if ready_keys.err then
      ready_keys = {}
    end
  end
  local key_overrides = base .. 'key-limits'
  for _, k in ipairs(ready_keys) do
    if stopped or claims >= room then
      break
    end
    local lane = base .. 'keyed:' .. k
    local kl = key_defaults
    local own = redis.call('HGET', key_overrides, k)
    if own then
      local f = {}
      for w in string.gmatch(own, '%S+') do
        f[#f + 1] = w ~= '-' and w or false
      end
      kl = { f[1], f[2], f[3], f[4] }
    end
    local krate = rate_of(kl[1] or nil, kl[2] or nil, kl[3] or nil, 'key ' .. k)
    local kcap = cap_of(kl[4] or nil, 'key ' .. k)
    local ks = redis.call('HMGET', throttle, 'tat:' .. k, 'until:' .. k)
    local ktat = stamp(ks[1])
    local kroom, wait = room - claims, 0
    local kuntil = stamp(ks[2])
    if kuntil > now then
      kroom, wait = 0, math.ceil(kuntil - now)
    end
    local r, w = gcra(krate, ktat, kroom)
    if r < kroom then
      kroom = r
      if r == 0 then
        wait = math.max(wait, w)
      end
    end
    local kheld = 0
    if kcap then
      kheld = redis.call('ZCARD', key_leases(k))
      if kcap - kheld < kroom then
        kroom = math.max(kcap - kheld, 0)
        if kroom == 0 then
          -- Ready again when one of its jobs settles (drop_key_lease), or
          -- at the latest when the earliest of its leases runs out.
          local first = redis.call('ZRANGE', key_leases(k), 0, 0, 'WITHSCORES')
          wait = math.max(wait, until_first(first), 1)
        end
      end
    end
    local w_ = { key = k }
    local avail = room - claims
    if kroom == 0 then
      w_.score = now + math.max(wait, 1)
    else
      local took, empty = take(lane, kroom, k)
      if krate and took > 0 then
        w_.tat = charged(krate, ktat, took)
      end
      if empty then
        -- Its state (TAT, hold) is needed until it passes: the key stays
        -- listed until then, and a later claim that finds its lane still
        -- empty removes it with its state (the throttle hash never keeps
        -- the state of keys gone for good).
        local last = math.max(w_.tat and stamp(w_.tat) or 0, ktat, kuntil)
        if last > now then
          w_.score = math.ceil(last)
          w_.idle = true
        else
          w_.remove = true
          w_.clear = true
        end
      elseif took >= kroom and kroom < avail then
        -- Its own limits cut it short: ready again when its rate allows
        -- one more, or (a cap) when one of its jobs settles.
        local again = 1000
        if krate then
          local start = math.max(stamp(w_.tat or '0'), ktat, now)
          again = math.max(math.ceil(start - krate.tau - now), 1)
          if kcap and kheld + took >= kcap then
            again = math.max(again, 1000)
          end
        end
        w_.score = now + again
      else
        -- Served: behind the keys that were waiting longer. Jobs are left:
        -- another idle runner may take them.
        w_.score = now
        waiting = true
      end
    end
    if w_.score and w_.score > now and not w_.idle then
      key_wait = key_wait and math.min(key_wait, w_.score - now) or (w_.score - now)
    end
    key_writes[#key_writes + 1] = w_
  end
  if #ready_keys == KEYS_PER_CALL and claims < want then
    -- More keys may be ready than one call looks at.
    waiting = true
  end

  -- Then write. Each lane's taken entries come off its oldest end with one
  -- LTRIM; one LPUSH lists the claimed ids in processing in the order one
  -- move per id would (on every Redis version).
  forget_answered()
  if #drained > 0 then
    redis.pcall('SREM', levels_key(), unpack(drained))
  end
  if #plan > 0 then
    for _, list in ipairs(trim_order) do
      redis.call('LTRIM', list, 0, -(trims[list] + 1))
    end
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
  for _, w_ in ipairs(key_writes) do
    if w_.remove then
      redis.call('ZREM', keyset, w_.key)
      if w_.clear then
        redis.pcall('HDEL', throttle, 'tat:' .. w_.key, 'until:' .. w_.key)
      end
    else
      redis.call('ZADD', keyset, ms(w_.score), w_.key)
    end
    if w_.tat then
      redis.pcall('HSET', throttle, 'tat:' .. w_.key, w_.tat)
    end
  end
  if qrate and claims > 0 then
    local tat = charged(qrate, qtat, claims)
    redis.pcall('HSET', throttle, 'tat', tat)
    if claims == room and room < want then
      hold, hold_ms = 'throttled', math.max(math.ceil(stamp(tat) - qrate.tau - now), 1)
    end
  end
  if hold == '' and qcap and claims == room and room < want then
    hold = 'capped'
    local first = redis.call('ZRANGE', Q.leases, 0, 0, 'WITHSCORES')
    hold_ms = math.max(until_first(first), 1)
    redis.pcall('HSET', throttle, 'capped', '1')
  end
  if hold == '' and key_wait and claims < want then
    hold, hold_ms = 'keys', key_wait
  end
  if waiting and hold == '' then
    -- Work is left in lanes an idle runner's BLMOVE cannot see: wake the
    -- next runner, as each claim does in turn.
    wake()
  end
end
if #leases > 0 then
  redis.call('ZADD', Q.leases, unpack(leases))
end
if #made > 0 then
  -- Ids cannot hold spaces (see enqueue.rs): a space separates the claims.
  redis.call('SET', request, table.concat(made, ' '), 'PX', 60000)
end
return { claimed, rejected, hold, hold_ms }
