-- delete.lua: removes one job: its hash, every list entry, its schedule,
-- its lease and its dead-letter record. A worker still running it finds its
-- claim gone (LeaseLost). A key of another type at the job's name is
-- deleted too: the caller asked for that name to go. A unique lock the job
-- holds is released (its key is derived from the job's key: the documented
-- exception). So are the lane it may wait in (its priority's or its rate
-- key's) and its key lease, derived from the pending key.
--
-- A child of a batch that had not ended yet is recorded as deleted in its
-- queue's outbox (see report_end in common.lua), so its batch still
-- completes.
--
-- KEYS[1]  job hash
-- KEYS[2]  pending list
-- KEYS[3]  processing list
-- KEYS[4]  completed list
-- KEYS[5]  failed list
-- KEYS[6]  cancelled list
-- KEYS[7]  scheduled sorted set
-- KEYS[8]  leases sorted set
-- KEYS[9]  settled sorted set, optional: the job's dead-letter record goes
--          with it (without it, the sweep's next full pass drops the record)
-- KEYS[10] outbox sorted set, optional (with KEYS[9] and KEYS[11]): a batch
--          child's end is recorded there
-- KEYS[11] outbox entries hash
-- ARGV[1]  job id
-- Returns: 1 deleted, 0 no such job

local id = ARGV[1]
for k = 2, 6 do
  expect(KEYS[k], 'list')
end
expect(KEYS[7], 'zset')
expect(KEYS[8], 'zset')
if KEYS[9] then
  expect(KEYS[9], 'zset')
end
local kind, f = read_job(KEYS[1], 'claim_token', 'unique_digest', 'unique_mode', 'batch', 'status')
-- A child of a batch that had not ended tells its batch it is gone.
local reports = KEYS[11] and kind == 'hash' and f[4] and string.sub(KEYS[1], -#id) == id
  and f[5] ~= 'completed' and f[5] ~= 'failed' and f[5] ~= 'cancelled'
if reports then
  Q.prefix = string.sub(KEYS[1], 1, #KEYS[1] - #id)
  Q.outbox, Q.entries = KEYS[10], KEYS[11]
  expect(Q.outbox, 'zset')
  expect(Q.entries, 'hash')
end
local now = reports and now_ms()
local token = kind == 'hash' and f[1] or nil
if kind == 'hash' and f[2] and string.sub(KEYS[1], -#id) == id then
  Q.prefix = string.sub(KEYS[1], 1, #KEYS[1] - #id)
  release_unique(id, f[2], f[3])
end
Q.pending = KEYS[2]
local lanes = 0
if kind == 'hash' and string.sub(KEYS[1], -#id) == id then
  Q.prefix = string.sub(KEYS[1], 1, #KEYS[1] - #id)
  -- Its lane, when it waits outside pending (read while the hash is here).
  local list = lane_of(lane_fields(id))
  if list ~= Q.pending then
    local r = redis.pcall('LREM', list, 0, id)
    lanes = type(r) == 'number' and r or 0
  end
  if token and token ~= '' then
    drop_key_lease(id, token)
  end
end
if reports then
  report_end(id, 'deleted', 'deleted', now, f[4], false)
end
local removed = lanes + redis.call('DEL', KEYS[1])
for k = 2, 6 do
  removed = removed + redis.call('LREM', KEYS[k], 0, id)
end
removed = removed + redis.call('ZREM', KEYS[7], id)
if token and token ~= '' then
  redis.call('ZREM', KEYS[8], lease(id, token))
  if redis.pcall('HDEL', queue_base() .. 'throttle', 'capped') == 1 then
    wake()
  end
end
if KEYS[9] then
  redis.call('ZREM', KEYS[9], lease(id, ''))
end
if removed > 0 then
  return 1
end
return 0
