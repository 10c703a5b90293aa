-- claim.lua: takes up to N jobs from pending and stamps each with a fresh
-- claim token and lease in the same step, so no sweep ever sees a claimed
-- job without its claim time (fixes reference bug 8.2, docs/reference-bugs.md#82-claim-is-not-atomic). Jobs that cannot run
-- are moved out of the way with a reason instead of being handed out.
--
-- KEYS[1]  pending list
-- KEYS[2]  processing list
-- KEYS[3]  leases sorted set ("id:token" -> lease deadline, ms)
-- KEYS[4]  failed list
-- KEYS[5]  stats hash
-- KEYS[6]  this request's key: a repeat of the same request (a retry after
--          its reply was lost) returns what the first one claimed instead of
--          claiming more jobs that nobody would run
-- KEYS[7]  paused flag: while it exists, nothing is claimed
-- KEYS[8..] keys of earlier requests whose replies arrived: deleted here, so
--          request keys live only while a reply may still be lost
-- ARGV[1]  job hash prefix (ids come from pending, so their hash keys are
--          derived here: the documented exception)
-- ARGV[2]  events channel
-- ARGV[3]  default visibility ms, for jobs without a visibility_ms field
-- ARGV[4]  default max attempts, for jobs without a max_attempts field
-- ARGV[5]  failed history cap
-- ARGV[6]  mode: "lmove" or "rpoplpush" (Redis < 6.2) to take ids from
--          pending; "adopt" when ARGV[7] was already moved to processing by
--          a blocking BRPOPLPUSH and only needs its stamp
-- ARGV[7]  the id to adopt ("adopt" mode), else ignored
-- ARGV[8..] one fresh claim token per job wanted
-- Returns: { claimed, rejected }
--          claimed:  list of { id, token, claimed_at_ms, lease_deadline_ms, {HGETALL} }
--          rejected: list of { id, outcome ("failed" | "dropped"), reason }
--          or the string "paused" while the queue is paused

Q.prefix, Q.channel = ARGV[1], ARGV[2]
Q.pending, Q.processing, Q.leases, Q.failed, Q.stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
Q.failed_cap = tonumber(ARGV[5])
local default_vis, default_max = ARGV[3], ARGV[4]
local mode = ARGV[6]
local now = now_ms()
local claimed, rejected = {}, {}
local request = KEYS[6]

-- The reply entry for a claim this request made.
local function entry(id, token, claimed_at, deadline)
  return { id, token, claimed_at, deadline, redis.call('HGETALL', Q.prefix .. id) }
end

for k = 8, #KEYS do
  if KEYS[k] ~= request then
    redis.call('DEL', KEYS[k])
  end
end

if mode ~= 'adopt' and redis.call('EXISTS', KEYS[7]) == 1 then
  return 'paused'
end

local previous = redis.call('GET', request)
if previous then
  -- A repeat: hand back the claims the first run made that still hold.
  for id, token in string.gmatch(previous, '([^,:]+):([^,]+)') do
    local f = redis.call('HMGET', Q.prefix .. id, 'claim_token', 'claimed_at_ms', 'status')
    local deadline = redis.call('ZSCORE', Q.leases, lease(id, token))
    if f[1] == token and f[3] == 'processing' and deadline then
      claimed[#claimed + 1] = entry(id, token, f[2], ms(tonumber(deadline)))
    end
  end
  return { claimed, rejected }
end

local function reject(id, outcome, reason)
  rejected[#rejected + 1] = { id, outcome, reason }
end

-- Stamps id, which sits at the head of processing. Returns true when claimed.
local function take(id, token)
  local key = Q.prefix .. id
  local f = redis.call('HMGET', key, 'status', 'attempts', 'max_attempts', 'visibility_ms', 'claim_token', 'unstamped_seen')
  -- A status proves the hash exists; only a hash without one needs asking.
  if not f[1] and redis.call('EXISTS', key) == 0 then
    redis.call('LREM', Q.processing, 1, id)
    reject(id, 'dropped', 'no job hash for this id')
    return false
  end
  local status = f[1]
  if status == 'completed' or status == 'failed' then
    redis.call('LREM', Q.processing, 1, id)
    reject(id, 'dropped', 'stale list entry: the job is already ' .. status)
    return false
  end
  local holder = f[5]
  if status == 'processing' and holder and holder ~= '' and redis.call('ZSCORE', Q.leases, lease(id, holder)) then
    -- Listed twice and held by a live or expiring claim of ours: the sweep
    -- owns that claim, so this extra entry goes.
    redis.call('LREM', Q.processing, 1, id)
    reject(id, 'dropped', 'duplicate list entry: the job is held by another claim')
    return false
  end
  local attempts, max, vis = job_numbers(f[2], f[3], f[4], default_max, default_vis)
  if attempts == nil then
    redis.call('LREM', Q.processing, 1, id)
    bury(id, max, now, '')
    reject(id, 'failed', max)
    return false
  end
  if attempts >= max then
    -- Only a reclaim that does not count attempts (a reference sweeper) can
    -- put such a job back in pending: stop the poison loop here (reference bug 8.1, docs/reference-bugs.md#81-poison-jobs-loop-forever).
    local reason = string.format('attempt %d of %d never finished; no attempts left', attempts, max)
    redis.call('LREM', Q.processing, 1, id)
    bury(id, reason, now, '')
    reject(id, 'failed', reason)
    return false
  end
  local deadline = now + vis
  redis.call('HSET', key, 'status', 'processing', 'attempts', ms(attempts + 1),
    'claimed_at_ms', ms(now), 'claim_token', token)
  if f[6] then
    redis.call('HDEL', key, 'unstamped_seen')
  end
  redis.call('ZADD', Q.leases, deadline, lease(id, token))
  claimed[#claimed + 1] = entry(id, token, ms(now), ms(deadline))
  return true
end

if mode == 'adopt' then
  local id = ARGV[7]
  -- The id must still be where BRPOPLPUSH put it: a sweep may have moved it
  -- back to pending in between, and then it is not ours to stamp.
  if redis.call('LREM', Q.processing, 1, id) == 1 then
    redis.call('LPUSH', Q.processing, id)
    take(id, ARGV[8])
  end
else
  -- Bound the work per call even when pending is full of unusable entries.
  local budget = 100
  local t = 8
  while t <= #ARGV and budget > 0 do
    local id
    if mode == 'rpoplpush' then
      id = redis.call('RPOPLPUSH', Q.pending, Q.processing)
    else
      id = redis.call('LMOVE', Q.pending, Q.processing, 'RIGHT', 'LEFT')
    end
    if not id then
      break
    end
    if take(id, ARGV[t]) then
      t = t + 1
    else
      budget = budget - 1
    end
  end
end
if #claimed > 0 then
  local made = {}
  for i, c in ipairs(claimed) do
    made[i] = lease(c[1], c[2])
  end
  redis.call('SET', request, table.concat(made, ','), 'PX', 60000)
end
return { claimed, rejected }
