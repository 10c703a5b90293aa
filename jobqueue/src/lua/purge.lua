-- purge.lua: deletes a queue in two kinds of steps, so that jobs written
-- while a purge runs are deleted whole or survive whole, never half (a hash
-- without its pending entry would never run; an entry without its hash is
-- dropped by the next claim).
--
-- "cut" deletes, at once, every key of the queue whose name is fixed (lists,
-- sets, counters, pause flag) and returns the Redis time T. Each "sweep"
-- step then gets the keys one SCAN step found and deletes the job hashes
-- enqueued before T (or with no usable enqueued_at_ms) and any other key of
-- the queue (claim request keys), but leaves alone the fixed keys
-- (recreated by jobs written since the cut) and the hashes of jobs enqueued
-- after T. A hash stamped T itself may come from either side of the cut:
-- the cut used to wait for the clock to pass T, but Redis 7.2 and later and
-- Valkey stop the clock for the whole of a script, so that wait never ended.
-- Such a hash is judged by where its state says it is listed: a job written
-- after the cut is still there (near the end a new entry goes to: the
-- oldest end of its lane, the newest of processing, failed, cancelled; in
-- scheduled), while the cut took the entries of the jobs before it. A
-- completed job (its hash expires), a batch callback (in no list) or an
-- unknown state is kept. Each such look reads at most NEAR entries, so a
-- step stays within a few ms; a job written after the cut and then pushed
-- NEAR places from its lane's end before the sweep reaches it would lose its
-- hash (its entry is then dropped by a claim, with a warning). A sweep step
-- reads every key it judges before its first delete, and gets at most 200
-- keys.
--
-- KEYS[1..] "cut": the fixed keys (pending first, processing, completed,
--           failed, cancelled, leases, scheduled, stats, paused, the
--           priority lanes and the flow-control state: levels, keys, wake,
--           throttle); the lanes of the rate keys listed in `keys` go with
--           them (derived from the pending key: the documented exception).
--           "sweep": the keys to leave alone (ARGV[4] of them: the fixed
--           keys in the order above, then the queue's limits), then the
--           keys to judge. A rate key's lane made after the cut is left
--           alone, and so are the queue's limits (configuration, not jobs);
--           the lane a hash stamped T names is read, derived from pending
--           like the claim's lanes.
-- ARGV[1]   "cut" or "sweep"
-- ARGV[2]   "sweep": T, as "cut" returned it
-- ARGV[3]   "sweep": the job hash prefix (only compared with key names)
-- ARGV[4]   "sweep": how many of KEYS are to be left alone (at least 7)
-- Returns:  "cut": { T, keys deleted }; "sweep": keys deleted

if ARGV[1] == 'cut' then
  Q.pending = KEYS[1]
  local cut = now_ms()
  local doomed = { unpack(KEYS) }
  local keyed = redis.pcall('ZRANGE', queue_base() .. 'keys', 0, -1)
  if type(keyed) == 'table' and not keyed.err then
    for _, k in ipairs(keyed) do
      doomed[#doomed + 1] = queue_base() .. 'keyed:' .. k
    end
  end
  local deleted = 0
  for c = 1, #doomed, 1000 do
    deleted = deleted + redis.call('UNLINK', unpack(doomed, c, math.min(c + 999, #doomed)))
  end
  return { cut, deleted }
end

if ARGV[1] ~= 'sweep' then
  return redis.error_reply('ERR purge: unknown mode "' .. tostring(ARGV[1]) .. '"')
end
local cut = tonumber(ARGV[2])
if cut == nil then
  return redis.error_reply('ERR purge: the cut time "' .. tostring(ARGV[2]) .. '" is not a number')
end
local prefix = ARGV[3]
local kept = integer(ARGV[4], 7, #KEYS)
if kept == nil then
  return redis.error_reply('ERR purge: the count of keys to leave alone "' .. tostring(ARGV[4]) ..
    '" is not between 7 and ' .. #KEYS)
end
Q.pending = KEYS[1]
local processing, failed, cancelled, scheduled = KEYS[2], KEYS[4], KEYS[5], KEYS[7]
local fixed = {}
for i = 1, kept do
  fixed[KEYS[i]] = true
end
local keyed = queue_base() .. 'keyed:'

-- How far from a list's end a hash stamped T is looked for.
local NEAR = 1000

-- Whether id is among the NEAR entries at one end of list (rank 1: the
-- newest end of a history, -1: the oldest end of a lane). An error (a key
-- of another type, LPOS before Redis 6.0.6) answers yes: keep.
local function near(list, id, rank)
  local at = redis.pcall('LPOS', list, id, 'RANK', rank, 'MAXLEN', NEAR)
  if type(at) == 'table' then
    return true
  end
  return at ~= false
end

-- Whether the job of hash key, stamped T, was written after the cut: its
-- state's list still holds it.
local function written_after_cut(key)
  local id = string.sub(key, #prefix + 1)
  local f = redis.pcall('HMGET', key, 'status', 'priority', 'rate_key')
  if type(f) ~= 'table' or f.err then
    return false
  end
  local status = f[1]
  if status == 'pending' then
    local lane = lane_of(f[2], f[3])
    return near(lane, id, -1) or (lane ~= Q.pending and near(Q.pending, id, -1))
  elseif status == 'scheduled' then
    return redis.pcall('ZSCORE', scheduled, id) ~= false
  elseif status == 'processing' then
    return near(processing, id, 1)
  elseif status == 'failed' then
    return near(failed, id, 1)
  elseif status == 'cancelled' then
    return near(cancelled, id, 1)
  end
  return true
end

local doomed = {}
for k = kept + 1, #KEYS do
  local key = KEYS[k]
  if string.sub(key, 1, #keyed) == keyed then
    -- A rate key's lane: those of the cut went with it; this one is newer.
  elseif not fixed[key] then
    if string.sub(key, 1, #prefix) == prefix then
      -- A key that is not a hash reads as enqueued at no usable time.
      local at = tonumber(redis.pcall('HGET', key, 'enqueued_at_ms'))
      if at == nil or at < cut or (at == cut and not written_after_cut(key)) then
        doomed[#doomed + 1] = key
      end
    else
      doomed[#doomed + 1] = key
    end
  end
end
if #doomed == 0 then
  return 0
end
return redis.call('UNLINK', unpack(doomed))
