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
--           happens when a batch is retried after its reply was lost. A job
--           key holding another type than a hash fails the whole batch
--           before anything is written.

Q.stats = KEYS[2]
expect(KEYS[1], 'list')
expect(Q.stats, 'hash')
expect(KEYS[3], 'zset')
local clock = now_ms()
local now = ms(clock)
-- Every job is read and checked first; then the writes.
local writes, planned = {}, {}
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
  local t = redis.call('TYPE', key).ok
  if t == 'none' and not planned[key] then
    planned[key] = true
    writes[#writes + 1] = { key, id, due, fields }
  elseif t ~= 'hash' then
    error(redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t ..
      ', not a job hash: the id ' .. id .. ' cannot be used for a job'))
  end
end
local ids = {}
for _, w in ipairs(writes) do
  local key, id, due, fields = w[1], w[2], w[3], w[4]
  if due > clock then
    fields[6] = 'scheduled'
    fields[#fields + 1] = 'scheduled_for_ms'
    fields[#fields + 1] = ms(due)
    redis.call('HSET', key, unpack(fields))
    redis.call('ZADD', KEYS[3], ms(due), id)
  else
    redis.call('HSET', key, unpack(fields))
    ids[#ids + 1] = id
  end
end
-- LPUSH in chunks: unpack is bounded by the Lua C stack.
for c = 1, #ids, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(ids, c, math.min(c + 999, #ids)))
end
if #writes > 0 then
  count('enqueued_total', #writes)
end
return #writes
