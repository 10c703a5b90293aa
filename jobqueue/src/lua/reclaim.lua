-- reclaim.lua: one bounded step of the sweep that returns stuck jobs.
--
-- Step 1 takes leases that ran out (claims of ours whose worker stopped
-- renewing) from the leases set: each job goes back to pending, or to the
-- dead letters when that claim was its last attempt (fixes reference bug 8.1, docs/reference-bugs.md#81-poison-jobs-loop-forever).
--
-- Step 2 walks a window of the processing list for entries without a lease:
-- claims made by reference clients, and entries left behind by crashes,
-- purges or expired hashes (fixes reference bug 8.9, docs/reference-bugs.md#89-orphaned-entries-and-hashes). An entry whose hash is gone or whose
-- job is already settled is dropped; a stamped claim older than the
-- visibility timeout is reclaimed as the reference does; an unstamped one
-- (a client that moves first and stamps after) is reclaimed only once it has
-- stayed unstamped for a whole visibility timeout after this sweep first saw
-- it, so a live worker's stamp is never overtaken (fixes reference bug 8.2, docs/reference-bugs.md#82-claim-is-not-atomic).
--
-- KEYS[1]  pending list
-- KEYS[2]  processing list
-- KEYS[3]  leases sorted set ("id:token" -> lease deadline, ms)
-- KEYS[4]  failed list
-- KEYS[5]  stats hash
-- ARGV[1]  job hash prefix (ids come from the processing list and the
--          leases set, so their hash keys are derived here: the documented
--          exception)
-- ARGV[2]  events channel
-- ARGV[3]  default visibility ms
-- ARGV[4]  default max attempts
-- ARGV[5]  failed history cap
-- ARGV[6]  most expired leases to handle in this call
-- ARGV[7]  walk cursor: index into processing, from the head
-- ARGV[8]  walk length (0 skips step 2)
-- Returns: { next cursor (-1 when the walk reached the end), more expired
--          leases waiting (0 or 1), reclaimed ids, failed ids, dropped ids }

Q.prefix, Q.channel = ARGV[1], ARGV[2]
Q.pending, Q.processing, Q.leases, Q.failed, Q.stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
Q.failed_cap = tonumber(ARGV[5])
local default_vis, default_max = ARGV[3], ARGV[4]
local now = now_ms()
local out = { reclaimed = {}, failed = {}, dropped = {} }

local function note(kind, id)
  out[kind][#out[kind] + 1] = id
end

-- Requeues or buries id (already out of processing), or buries it when its
-- numeric fields are unusable.
local function settle(id, f_attempts, f_max, f_vis, why, token)
  local attempts, max = job_numbers(f_attempts, f_max, f_vis, default_max, default_vis)
  if attempts == nil then
    bury(id, max, now, token)
    note('failed', id)
  else
    note(requeue_or_bury(id, attempts, max, why, now, token), id)
  end
end

-- Step 1: expired leases, oldest deadline first. A lease names its claim
-- ("id:token"); it only counts while that claim still holds the job. A lease
-- whose claim ended otherwise (settled, or taken back by a reference
-- sweeper and maybe claimed again by someone else) is just removed, and the
-- processing entry, if any, is left to step 2's rules.
local limit = tonumber(ARGV[6])
local expired = redis.call('ZRANGEBYSCORE', Q.leases, '-inf', '(' .. ms(now), 'LIMIT', 0, limit)
for _, member in ipairs(expired) do
  redis.call('ZREM', Q.leases, member)
  local id, token = string.match(member, '^(.*):([^:]*)$')
  if id then
    local key = Q.prefix .. id
    local f = redis.call('HMGET', key, 'status', 'attempts', 'max_attempts', 'visibility_ms', 'claim_token')
    if redis.call('EXISTS', key) == 0 then
      redis.call('LREM', Q.processing, 1, id)
      note('dropped', id)
    elseif f[1] == 'processing' and token ~= '' and f[5] == token then
      redis.call('LREM', Q.processing, 1, id)
      settle(id, f[2], f[3], f[4], 'lease expired (visibility timeout)', token)
    end
  end
end

-- Step 2: the window of processing entries without a live lease of ours.
local cursor, len = tonumber(ARGV[7]), tonumber(ARGV[8])
local next_cursor = -1
if len > 0 then
  local entries = redis.call('LRANGE', Q.processing, cursor, cursor + len - 1)
  local removed = 0
  for _, id in ipairs(entries) do
    local key = Q.prefix .. id
    local f = redis.call('HMGET', key, 'status', 'attempts', 'max_attempts', 'visibility_ms',
      'claimed_at_ms', 'unstamped_seen', 'claim_token')
    local holder = f[7] or ''
    if holder == '' or not redis.call('ZSCORE', Q.leases, lease(id, holder)) then
      local status = f[1]
      local vis = tonumber(f[4] or default_vis) or tonumber(default_vis)
      local claimed_at = tonumber(f[5] or '0') or 0
      local gone = false
      if redis.call('EXISTS', key) == 0 or status == 'completed' or status == 'failed' then
        redis.call('LREM', Q.processing, 1, id)
        note('dropped', id)
        gone = true
      elseif claimed_at > 0 then
        if now - claimed_at > vis then
          redis.call('LREM', Q.processing, 1, id)
          settle(id, f[2], f[3], f[4], 'visibility timeout', '')
          gone = true
        end
      else
        local mark = tostring(f[2]) .. ':'
        local seen = f[6]
        if seen and string.sub(seen, 1, #mark) == mark then
          if now - (tonumber(string.sub(seen, #mark + 1)) or now) > vis then
            redis.call('LREM', Q.processing, 1, id)
            redis.call('HDEL', key, 'unstamped_seen')
            settle(id, f[2], f[3], f[4], 'claimed but never stamped within the visibility timeout', '')
            gone = true
          end
        else
          redis.call('HSET', key, 'unstamped_seen', mark .. ms(now))
        end
      end
      if gone then
        removed = removed + 1
      end
    end
  end
  if #entries == len then
    next_cursor = cursor + len - removed
  end
end

local more = 0
if #expired == limit then
  more = 1
end
return { next_cursor, more, out.reclaimed, out.failed, out.dropped }
