-- enqueue.lua: writes a batch of new jobs, each hash together with its
-- pending entry (or its scheduled entry, for a job due later), so neither can
-- exist without the other (fixes reference bug 8.9, docs/reference-bugs.md#89-orphaned-entries-and-hashes).
--
-- KEYS[1]   pending list
-- KEYS[2]   stats hash
-- KEYS[3]   scheduled sorted set (id -> due time, ms)
-- KEYS[4..] one job hash per job, in the order of the jobs in ARGV
-- ARGV[1..] per job: id, payload JSON, when ("" now, "+N" N ms from now,
--           "@N" at N ms since the epoch), number of extra fields E, then E
--           field/value pairs (job, max_attempts, visibility_ms)
-- Returns:  the number of jobs written. A job whose hash already exists is
--           left alone and not counted: ids are 64 random bits, so that only
--           happens when a batch is retried after its reply was lost.

local clock = now_ms()
local now = ms(clock)
local ids = {}
local written = 0
local a = 1
for k = 4, #KEYS do
  local key = KEYS[k]
  local id, payload, when, extra = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local due = 0
  if string.sub(when, 1, 1) == '+' then
    due = clock + tonumber(string.sub(when, 2))
  elseif string.sub(when, 1, 1) == '@' then
    due = tonumber(string.sub(when, 2))
  end
  local fields = { 'id', id, 'payload', payload, 'status', 'pending', 'attempts', '0',
    'enqueued_at_ms', now, 'claim_token', '' }
  for e = 1, extra * 2 do
    fields[#fields + 1] = ARGV[a + 3 + e]
  end
  a = a + 4 + extra * 2
  if redis.call('EXISTS', key) == 0 then
    written = written + 1
    if due > clock then
      fields[6] = 'scheduled'
      fields[#fields + 1] = 'scheduled_for_ms'
      fields[#fields + 1] = ms(due)
      redis.call('HSET', key, unpack(fields))
      redis.call('ZADD', KEYS[3], due, id)
    else
      redis.call('HSET', key, unpack(fields))
      ids[#ids + 1] = id
    end
  end
end
-- LPUSH in chunks: unpack is bounded by the Lua C stack.
for c = 1, #ids, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(ids, c, math.min(c + 999, #ids)))
end
if written > 0 then
  redis.call('HINCRBY', KEYS[2], 'enqueued_total', written)
end
return written
