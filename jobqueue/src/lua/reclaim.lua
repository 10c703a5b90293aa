-- reclaim.lua: one bounded step of the sweep, of one of two kinds.
-- (A job put back goes to its own lane when it has a priority or a rate
-- key, and a runner waiting under max_running is woken: see common.lua.)
--
-- ARGV[1]  the step: "leases" or "history", each described below with its
--          KEYS, the rest of its ARGV and its reply
-- ARGV[2]  job hash prefix (ids come from the processing list, the leases
--          set, the histories and the settled set, so their hash keys are
--          derived here: the documented exception)
--
-- "leases" returns stuck jobs.
--
-- Step 1 takes leases that ran out (claims of ours whose worker stopped
-- renewing) from the leases set: each job goes back to pending, or to the
-- dead letters when that claim was its last attempt (fixes reference bug 8.1, docs/reference-bugs.md#81-poison-jobs-loop-forever).
--
-- Step 2 walks a window of the processing list for entries without a lease:
-- claims made by reference clients, and entries left behind by crashes,
-- purges or expired hashes (fixes reference bug 8.9, docs/reference-bugs.md#89-orphaned-entries-and-hashes). An entry whose hash is gone, whose
-- key is not a hash, or whose job is already settled is dropped; a stamped
-- claim older than the visibility timeout is reclaimed as the reference
-- does; an unstamped one (a client that moves first and stamps after) is
-- reclaimed only once it has stayed unstamped for a whole visibility
-- timeout after this sweep first saw it, so a live worker's stamp is never
-- overtaken (fixes reference bug 8.2, docs/reference-bugs.md#82-claim-is-not-atomic). A stamp that is not a
-- decimal timestamp counts as no stamp.
--
-- In both steps a job whose cancel was requested while it ran ends as
-- cancelled instead (its handler never reported back), never requeued.
--
-- In both steps the job hashes are read first; a job whose hash cannot be
-- read here (a cluster slot migration) is left as it is, lease included.
--
-- KEYS[1]  pending list
-- KEYS[2]  processing list
-- KEYS[3]  leases sorted set ("id:token" -> lease deadline, ms)
-- KEYS[4]  failed list
-- KEYS[5]  stats hash
-- KEYS[6]  settled sorted set (a job failed here is recorded as a dead letter)
-- KEYS[7]  cancelled list
-- KEYS[8]  outbox sorted set (ends of batch children and chain steps)
-- KEYS[9]  outbox entries hash
-- ARGV[3]  events channel
-- ARGV[4]  default visibility ms
-- ARGV[5]  default max attempts
-- ARGV[6]  failed history cap
-- ARGV[7]  most expired leases to handle in this call
-- ARGV[8]  walk cursor: index into processing, from the head
-- ARGV[9]  walk length (0 skips step 2)
-- Returns: { next cursor (-1 when the walk reached the end), more expired
--          leases waiting (0 or 1), reclaimed ids, failed ids,
--          dropped: list of { id, reason }, cancelled ids }
--
-- "history" keeps the histories consistent with the job hashes.
--
-- Step 3 walks a window of the completed history and removes the entries
-- whose hash is gone (its completed_ttl ran out, or it was deleted) or is
-- not a hash: the history lists only jobs that can be read (reference 8.14,
-- which bury's trimming fixes for dead letters).
--
-- Step 4 trims both histories to their caps, finishing a trim a settle
-- left for later (it meets a hash that a slot migration had not moved yet).
--
-- Step 5 finds dead letters whose listing is gone: a reference client's
-- terminal fail trims `failed` to 50 with LTRIM, which leaves the hashes of
-- the ids it cuts off (dead letters have no TTL) for ever. Every dead
-- letter of ours is recorded in the settled set ("id:" scored by minus the
-- time it became one), and a trim takes the oldest first, so the records
-- no newer than the oldest listed dead letter of ours are the candidates;
-- each is checked with LPOS before its hash is deleted.
--
-- Step 6 forgets ended claims kept past their time (see common.lua).
--
-- KEYS[1]  completed list
-- KEYS[2]  failed list
-- KEYS[3]  settled sorted set
-- ARGV[3]  completed history cap
-- ARGV[4]  failed history cap
-- ARGV[5]  walk cursor: index into completed, from the head
-- ARGV[6]  walk length (0 skips step 3)
-- ARGV[7]  most dead-letter records to check (0 skips step 5)
-- ARGV[8]  most ended claims remembered
-- Returns: { next cursor (-1 when the walk reached the end), more dead
--          letters to check (0 or 1), ids taken off the completed history,
--          dead letters deleted because nothing listed them }

Q.prefix = ARGV[2]
local now = now_ms()

-- Judges and returns stuck jobs ("leases").
local function leases()
  Q.channel = ARGV[3]
  Q.pending, Q.processing, Q.leases, Q.failed, Q.stats, Q.settled, Q.cancelled =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
  Q.outbox, Q.entries = KEYS[8], KEYS[9]
  Q.failed_cap = tonumber(ARGV[6])
  local default_vis, default_max = ARGV[4], ARGV[5]
  expect_queue_keys()
  expect_ends()
  local out = { reclaimed = {}, failed = {}, dropped = {}, cancelled = {} }

  local function drop(id, reason)
    redis.call('LREM', Q.processing, 1, id)
    out.dropped[#out.dropped + 1] = { id, reason }
  end

  -- Requeues or buries id (taken out of processing here), or buries it when
  -- its numeric fields are unusable; ends it as cancelled when a cancel was
  -- requested (cancel_reason given).
  local function settle(id, f_attempts, f_max, f_vis, why, token, cancel_reason)
    redis.call('LREM', Q.processing, 1, id)
    local attempts, max = job_numbers(f_attempts, f_max, f_vis, default_max, default_vis)
    if cancel_reason then
      end_cancelled(id, cancel_reason, now, token, 'cancelled_total')
      out.cancelled[#out.cancelled + 1] = id
    elseif attempts == nil then
      bury(id, max, now, token)
      out.failed[#out.failed + 1] = id
    else
      local kind = requeue_or_bury(id, attempts, max, why, now, token)
      out[kind][#out[kind] + 1] = id
    end
  end

  -- Step 1: expired leases, oldest deadline first. A lease names its claim
  -- ("id:token"); it only counts while that claim still holds the job. A
  -- lease whose claim ended otherwise (settled, or taken back by a reference
  -- sweeper and maybe claimed again by someone else) is just removed, and
  -- the processing entry, if any, is left to step 2's rules.
  local limit = tonumber(ARGV[7])
  local expired = redis.call('ZRANGEBYSCORE', Q.leases, '-inf', '(' .. ms(now), 'LIMIT', 0, limit)
  local judged = {}
  for _, member in ipairs(expired) do
    local id, token = string.match(member, '^(.*):([^:]*)$')
    if not id then
      judged[#judged + 1] = { member = member }
    else
      local kind, f = read_job(Q.prefix .. id, 'status', 'attempts', 'max_attempts', 'visibility_ms', 'claim_token',
        'cancel_requested_at_ms', 'cancel_reason')
      if kind ~= 'elsewhere' then
        judged[#judged + 1] = { member = member, id = id, token = token, kind = kind, f = f }
      end
    end
  end
  if #judged > 0 and redis.pcall('HDEL', queue_base() .. 'throttle', 'capped') == 1 then
    -- Leases go here: a runner waiting for a slot under max_running may
    -- claim again.
    wake()
  end
  for _, j in ipairs(judged) do
    redis.call('ZREM', Q.leases, j.member)
    if not j.id then
      -- Not a lease of ours: nothing to take back.
    elseif j.kind ~= 'hash' then
      drop(j.id, not_a_job(j.kind, j.f))
    elseif j.f[1] == 'processing' and j.token ~= '' and j.f[5] == j.token then
      settle(j.id, j.f[2], j.f[3], j.f[4], 'lease expired (visibility timeout)', j.token,
        j.f[6] and (j.f[7] or 'cancelled'))
    else
      -- The claim ended otherwise (a reference sweeper took the job back):
      -- its key lease goes with its lease, or the key's cap would stay
      -- lower for good.
      drop_key_lease(j.id, j.token)
    end
  end

  -- Step 2: the window of processing entries without a live lease of ours.
  local cursor, len = tonumber(ARGV[8]), tonumber(ARGV[9])
  local next_cursor = -1
  if len > 0 then
    local entries = redis.call('LRANGE', Q.processing, cursor, cursor + len - 1)
    local steps, seen = {}, {}
    for _, id in ipairs(entries) do
      -- An id listed twice is judged once per walk.
      if not seen[id] then
        seen[id] = true
        local kind, f = read_job(Q.prefix .. id, 'status', 'attempts', 'max_attempts', 'visibility_ms',
          'claimed_at_ms', 'unstamped_seen', 'claim_token', 'cancel_requested_at_ms', 'cancel_reason')
        local holder = kind == 'hash' and f[7] or ''
        if kind == 'elsewhere' or (holder ~= '' and redis.call('ZSCORE', Q.leases, lease(id, holder))) then
          -- Left alone: not readable here, or held by a live claim of ours.
        elseif kind ~= 'hash' then
          steps[#steps + 1] = { id, 'drop', not_a_job(kind, f) }
        elseif f[1] == 'completed' or f[1] == 'failed' or f[1] == 'cancelled' then
          steps[#steps + 1] = { id, 'drop', 'stale list entry: the job is already ' .. f[1] }
        else
          -- The staleness test needs a usable visibility: the queue's when
          -- the job's own is malformed (the job is then failed, with why).
          local vis = integer(f[4] or default_vis, MIN_VISIBILITY_MS, MAX_DURATION_MS) or tonumber(default_vis)
          local claimed_at = integer(f[5] or '0', 0, MAX_TIMESTAMP_MS) or 0
          if claimed_at > 0 then
            if now - claimed_at > vis then
              steps[#steps + 1] = { id, 'settle', f, 'visibility timeout' }
            end
          else
            local mark = tostring(f[2]) .. ':'
            local marked = f[6]
            local since = marked and string.sub(marked, 1, #mark) == mark
              and integer(string.sub(marked, #mark + 1), 0, MAX_TIMESTAMP_MS)
            if not since then
              steps[#steps + 1] = { id, 'mark', mark .. ms(now) }
            elseif now - since > vis then
              steps[#steps + 1] = { id, 'settle', f, 'claimed but never stamped within the visibility timeout' }
            end
          end
        end
      end
    end
    local removed = 0
    for _, s in ipairs(steps) do
      local id, what = s[1], s[2]
      if what == 'drop' then
        drop(id, s[3])
        removed = removed + 1
      elseif what == 'mark' then
        redis.call('HSET', Q.prefix .. id, 'unstamped_seen', s[3])
      else
        local f = s[3]
        if f[6] then
          redis.call('HDEL', Q.prefix .. id, 'unstamped_seen')
        end
        settle(id, f[2], f[3], f[4], s[4], '', f[8] and (f[9] or 'cancelled'))
        removed = removed + 1
      end
    end
    if #entries == len then
      next_cursor = cursor + len - removed
    end
  end

  local more = 0
  if #expired == limit and #judged > 0 then
    more = 1
  end
  return { next_cursor, more, out.reclaimed, out.failed, out.dropped, out.cancelled }
end

-- Keeps the histories consistent with the job hashes ("history").
local function history()
  local completed = KEYS[1]
  Q.failed, Q.settled = KEYS[2], KEYS[3]
  expect(completed, 'list')
  expect(Q.failed, 'list')
  expect(Q.settled, 'zset')
  local expired, unlisted = {}, {}

  -- Step 3: entries of the window whose job hash is gone. They are marked in
  -- place and removed with one LREM (ids hold no NUL byte, the mark does).
  local cursor, len = tonumber(ARGV[5]), tonumber(ARGV[6])
  local next_cursor = -1
  if len > 0 then
    local entries = redis.call('LRANGE', completed, cursor, cursor + len - 1)
    local gone = {}
    for i, id in ipairs(entries) do
      local kind = read_job(Q.prefix .. id)
      if kind == 'none' or kind == 'wrongtype' then
        gone[#gone + 1] = i
      end
    end
    if #gone > 0 then
      local mark = '\0expired\0'
      for _, i in ipairs(gone) do
        redis.call('LSET', completed, cursor + i - 1, mark)
        expired[#expired + 1] = entries[i]
      end
      redis.call('LREM', completed, 0, mark)
    end
    if #entries == len then
      next_cursor = cursor + len - #gone
    end
  end

  -- Step 4: the caps.
  trim_history(completed, tonumber(ARGV[3]), 'completed')
  Q.failed_cap = tonumber(ARGV[4])
  trim_history(Q.failed, Q.failed_cap, 'failed')

  -- Step 5: dead letters whose listing is gone.
  local limit = tonumber(ARGV[7])
  local more = 0
  if limit > 0 then
    local listed_len = redis.call('LLEN', Q.failed)
    -- Each candidate costs an LPOS of the whole list: bound the total.
    limit = math.max(1, math.min(limit, math.floor(100000 / (listed_len + 1))))
    local tail = redis.call('LRANGE', Q.failed, -STEP, -1)
    local upto = '-inf'
    for i = #tail, 1, -1 do
      local score = redis.call('ZSCORE', Q.settled, lease(tail[i], ''))
      if score and tonumber(score) < 0 then
        upto = score
        break
      end
    end
    local records = redis.call('ZREVRANGEBYSCORE', Q.settled, '(0', upto, 'LIMIT', 0, limit)
    local changed = 0
    for _, member in ipairs(records) do
      local id = string.match(member, '^(.*):$')
      if id then
        local key = Q.prefix .. id
        local kind, f = read_job(key, 'status')
        if kind == 'elsewhere' then
          -- Not readable here now: for a later sweep.
        elseif kind ~= 'hash' or f[1] ~= 'failed' then
          -- Not a dead letter any more (retried, deleted): only the record goes.
          redis.call('ZREM', Q.settled, member)
          changed = changed + 1
        else
          local at = redis.pcall('LPOS', Q.failed, id, 'RANK', -1)
          if at == false then
            redis.call('DEL', key)
            redis.call('ZREM', Q.settled, member)
            unlisted[#unlisted + 1] = id
            changed = changed + 1
          end
        end
      end
    end
    if #records == limit and changed > 0 then
      more = 1
    end
  end

  -- Step 6: ended claims kept past their time.
  forget(now, tonumber(ARGV[8]))
  return { next_cursor, more, expired, unlisted }
end

if ARGV[1] == 'history' then
  return history()
end
return leases()
