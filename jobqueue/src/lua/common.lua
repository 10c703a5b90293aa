-- common.lua: helpers prepended to every operation script (see scripts.rs).
--
-- A helper touches only keys its caller received in KEYS, plus job hashes
-- named by ids read from a list or sorted set: those are derived from the
-- job-hash prefix, the one documented exception to "every key in KEYS"
-- (in the hash-tagged layout they share the queue's slot).
--
-- Each operation fills the table Q with the names it has, before calling a
-- helper that needs them: Q.prefix, Q.channel, Q.processing, Q.pending,
-- Q.failed, Q.leases, Q.stats, Q.failed_cap.

local Q = {}

-- Redis before 5.0 refuses writes after TIME unless effects are replicated;
-- from 7.0 this call is a no-op.
redis.replicate_commands()

-- One clock for every timestamp: the Redis server's (fixes reference bug 8.8, docs/reference-bugs.md#88-timestamps-come-from-client-clocks).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integer milliseconds as a decimal string, never in exponent notation.
local function ms(n)
  return string.format('%d', n)
end

-- Publishes the reference event shape, inside the script that changed the
-- state (fixes reference bug 8.5, docs/reference-bugs.md#85-events-are-published-outside-the-script).
local function publish(id, status)
  redis.call('PUBLISH', Q.channel,
    '{"id":' .. cjson.encode(id) .. ',"status":"' .. status .. '"}')
end

-- Pushes id onto a history list and trims the list to cap entries. The hash
-- of every id trimmed off is deleted when it is still in that list's state,
-- so a dead letter's hash lives exactly as long as its listing (reference bug 8.14, docs/reference-bugs.md#814-history-outlives-job-hashes).
local function push_history(list, id, cap, status)
  local excess = redis.call('LPUSH', list, id) - cap
  for _ = 1, excess do
    local old = redis.call('RPOP', list)
    local key = Q.prefix .. old
    if redis.call('HGET', key, 'status') == status then
      redis.call('DEL', key)
    end
  end
end

-- Reads attempts, max_attempts and visibility_ms from fields already fetched,
-- falling back to the queue defaults for fields the reference never writes.
-- Returns attempts, max, visibility, or nil and the reason they are unusable.
local function job_numbers(attempts, max, vis, default_max, default_vis)
  local a = tonumber(attempts or '0')
  if a == nil then
    return nil, 'invalid job hash: attempts is "' .. tostring(attempts) .. '", not a number'
  end
  local m = tonumber(max or default_max)
  if m == nil then
    return nil, 'invalid job hash: max_attempts is "' .. tostring(max) .. '", not a number'
  end
  local v = tonumber(vis or default_vis)
  if v == nil then
    return nil, 'invalid job hash: visibility_ms is "' .. tostring(vis) .. '", not a number'
  end
  return a, m, v
end

-- The leases set's member for a claim: the id and the claim's token, so a
-- lease names the claim it belongs to, not just the job.
local function lease(id, token)
  return id .. ':' .. token
end

-- Moves a job to the dead letters with a reason. The caller has already
-- taken the id out of whatever list held it; token is the claim whose lease
-- goes with it ('' when there is none).
local function bury(id, reason, now, token)
  local key = Q.prefix .. id
  redis.call('HSET', key, 'status', 'failed', 'last_error', reason,
    'last_error_at_ms', ms(now), 'failed_at_ms', ms(now), 'claim_token', '')
  redis.call('PERSIST', key)
  if token ~= '' then
    redis.call('ZREM', Q.leases, lease(id, token))
  end
  push_history(Q.failed, id, Q.failed_cap, 'failed')
  redis.call('HINCRBY', Q.stats, 'failed_total', 1)
  publish(id, 'failed')
end

-- Puts a job whose claim ran out back in pending, or buries it when the claim
-- that ran out was its last allowed attempt (fixes reference bug 8.1, docs/reference-bugs.md#81-poison-jobs-loop-forever).
local function requeue_or_bury(id, attempts, max, why, now, token)
  if attempts >= max then
    bury(id, string.format('%s on attempt %d of %d; no attempts left', why, attempts, max), now, token)
    return 'failed'
  end
  redis.call('HSET', Q.prefix .. id, 'status', 'pending', 'reclaimed_at_ms', ms(now),
    'claim_token', '', 'claimed_at_ms', '0')
  if token ~= '' then
    redis.call('ZREM', Q.leases, lease(id, token))
  end
  redis.call('LPUSH', Q.pending, id)
  redis.call('HINCRBY', Q.stats, 'reclaimed_total', 1)
  publish(id, 'reclaimed')
  return 'reclaimed'
end

