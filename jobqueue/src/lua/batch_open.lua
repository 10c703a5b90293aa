-- batch_open.lua: writes a new batch before any of its children exists:
-- its hash (state "open", the number of children, the ids of its
-- callbacks), its place in the queue's batch index, and its callback jobs,
-- each a job hash with status "waiting" in no list (reference clients never
-- see them) until the batch completes (batch_record.lua releases them).
-- The batch lives on its callbacks' queue (in the hash-tagged layout, its
-- slot), so the release is one atomic script on a cluster too
-- (docs/data-model.md#workflows).
--
-- Writing the batch first means no child can end before its batch exists;
-- the batch completes when every one of `total` children has reported.
--
-- KEYS[1]   batch hash
-- KEYS[2]   batch index sorted set of the queue (batch id -> created, ms)
-- KEYS[3..] one job hash per callback, in the order of ARGV
-- ARGV[1]   batch id
-- ARGV[2]   number of children (1 to 10,000)
-- ARGV[3]   how long the batch is kept once done, in seconds
-- ARGV[4]   the queue the batch lives on (stored, for readers)
-- ARGV[5..] per callback: role ("complete" or "success"), id, payload
--           JSON, number of extra fields E, then E field/value pairs
-- Returns:  1 written; 0 a batch with this id exists already (nothing
--           written); an error reply, with nothing written, when a key holds
--           another type, the arguments are malformed (more than two
--           callbacks, a role twice, field pairs that do not add up) or a
--           callback's job exists already

local MAX_CHILDREN = 10000
local key, index, id = KEYS[1], KEYS[2], ARGV[1]
local total = integer(ARGV[2], 1, MAX_CHILDREN)
local keep = integer(ARGV[3], 1, MAX_TTL_S)
if not total then
  return redis.error_reply('ERR batch_open: ' .. malformed('children', ARGV[2], 1, MAX_CHILDREN))
end
if not keep then
  return redis.error_reply('ERR batch_open: ' .. malformed('retention', ARGV[3], 1, MAX_TTL_S))
end
expect(index, 'zset')
local t = redis.call('TYPE', key).ok
if t == 'hash' then
  return 0
elseif t ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a hash; nothing written')
end
-- Read and check every callback before the first write.
if #KEYS > 4 then
  return redis.error_reply('ERR batch_open: at most two callbacks; nothing written')
end
local callbacks, at, roles = {}, 5, {}
for k = 3, #KEYS do
  local role, cb, payload, extra = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  if (role ~= 'complete' and role ~= 'success') or roles[role] or not extra or extra < 0 or extra > 64
      or at + 3 + extra * 2 > #ARGV then
    return redis.error_reply('ERR batch_open: callback ' .. (k - 2) .. ' is malformed; nothing written')
  end
  roles[role] = true
  if redis.call('EXISTS', KEYS[k]) == 1 then
    return redis.error_reply('ERR batch_open: the callback job ' .. cb .. ' exists already; nothing written')
  end
  callbacks[#callbacks + 1] = { key = KEYS[k], role = role, id = cb, payload = payload,
    from = at + 4, to = at + 3 + extra * 2 }
  at = at + 4 + extra * 2
end

if at ~= #ARGV + 1 then
  return redis.error_reply('ERR batch_open: ' .. (#ARGV + 1 - at) .. ' arguments left over; nothing written')
end
local now = ms(now_ms())
local fields = { 'id', id, 'queue', ARGV[4], 'state', 'open', 'total', ms(total), 'succeeded', '0',
  'failed', '0', 'created_at_ms', now, 'keep_s', ms(keep), 'on_complete', '', 'on_success', '' }
for _, cb in ipairs(callbacks) do
  local job = { 'id', cb.id, 'payload', cb.payload, 'status', 'waiting', 'attempts', '0',
    'enqueued_at_ms', now, 'batch_of', id }
  for e = cb.from, cb.to do
    job[#job + 1] = ARGV[e]
  end
  redis.call('HSET', cb.key, unpack(job))
  fields[cb.role == 'complete' and 18 or 20] = cb.id
end
redis.call('HSET', key, unpack(fields))
redis.call('ZADD', index, now, id)
return 1
