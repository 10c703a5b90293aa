-- purge.lua: deletes a queue in two kinds of steps, so that jobs written
-- while a purge runs are deleted whole or survive whole, never half (a hash
-- without its pending entry would never run; an entry without its hash is
-- dropped by the next claim).
--
-- "cut" deletes, at once, every key of the queue whose name is fixed (lists,
-- sets, counters, pause flag) and returns the Redis time T; it then waits
-- (under 1 ms) for the clock to pass T, so a job enqueued after it has
-- enqueued_at_ms > T. Each "sweep" step then gets the keys one SCAN step
-- found and deletes the job hashes enqueued at or before T (or with no
-- usable enqueued_at_ms) and any other key of the queue (claim request
-- keys), but leaves alone the fixed keys (recreated by jobs written since
-- the cut) and the hashes of jobs enqueued after T. A sweep step reads
-- every key it judges before its first delete, and gets at most 200 keys.
--
-- KEYS[1..] "cut": the fixed keys (pending first, processing, completed,
--           failed, leases, scheduled, stats, paused, the priority lanes and
--           the flow-control state: levels, keys, wake, throttle); the lanes of the
--           rate keys listed in `keys` go with them (derived from the
--           pending key: the documented exception). "sweep": the keys to
--           judge. A rate key's lane made after the cut is left alone, and
--           so are the queue's limits (configuration, not jobs).
-- ARGV[1]   "cut" or "sweep"
-- ARGV[2]   "sweep": T, as "cut" returned it
-- ARGV[3]   "sweep": the job hash prefix (only compared with key names)
-- ARGV[4..] "sweep": the fixed key names, to leave alone
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
  while now_ms() <= cut do
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
local fixed = {}
for i = 4, #ARGV do
  fixed[ARGV[i]] = true
end
local doomed = {}
local keyed = ARGV[4] and string.sub(ARGV[4], 1, -8) .. 'keyed:'
for _, key in ipairs(KEYS) do
  if keyed and string.sub(key, 1, #keyed) == keyed then
    -- A rate key's lane: those of the cut went with it; this one is newer.
  elseif not fixed[key] then
    if string.sub(key, 1, #prefix) == prefix then
      -- A key that is not a hash reads as enqueued at no usable time.
      local at = tonumber(redis.pcall('HGET', key, 'enqueued_at_ms'))
      if at == nil or at <= cut then
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
