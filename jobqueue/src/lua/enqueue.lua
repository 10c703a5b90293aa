-- enqueue.lua: writes a batch of new jobs, each hash together with its
-- pending entry, so neither can exist without the other (fixes 8.9).
--
-- KEYS[1]   pending list
-- KEYS[2]   stats hash
-- KEYS[3..] one job hash per job, in the order of the jobs in ARGV
-- ARGV[1..] per job: id, payload JSON, number of extra fields E, then E
--           field/value pairs (job, max_attempts, visibility_ms)
-- Returns:  the number of jobs written. A job whose hash already exists is
--           left alone and not counted: ids are 64 random bits, so that only
--           happens when a batch is retried after its reply was lost.

local now = ms(now_ms())
local ids = {}
local a = 1
for k = 3, #KEYS do
  local key = KEYS[k]
  local id, payload, extra = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local fields = { 'id', id, 'payload', payload, 'status', 'pending', 'attempts', '0',
    'enqueued_at_ms', now, 'claim_token', '' }
  for e = 1, extra * 2 do
    fields[#fields + 1] = ARGV[a + 2 + e]
  end
  a = a + 3 + extra * 2
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, unpack(fields))
    ids[#ids + 1] = id
  end
end
-- LPUSH in chunks: unpack is bounded by the Lua C stack.
for c = 1, #ids, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(ids, c, math.min(c + 999, #ids)))
end
if #ids > 0 then
  redis.call('HINCRBY', KEYS[2], 'enqueued_total', #ids)
end
return #ids
