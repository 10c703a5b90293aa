-- floor_enqueue.lua (benchmark only): the reference design's own enqueue
-- writes for a batch of jobs, nothing else: one HSET per job with the
-- reference's fields, one LPUSH for the batch. No checks, no counters. The
-- bench runs it to show the Redis CPU floor of the reference data model.
--
-- KEYS[1]  pending list
-- ARGV[1]  job hash prefix
-- ARGV[2]  enqueued_at_ms
-- ARGV[3..] per job: id, payload
-- Returns: the number of jobs written

local ids = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  redis.call('HSET', ARGV[1] .. id, 'id', id, 'payload', ARGV[i + 1], 'status', 'pending',
    'attempts', '0', 'enqueued_at_ms', ARGV[2], 'claim_token', '')
  ids[#ids + 1] = id
end
redis.call('LPUSH', KEYS[1], unpack(ids))
return #ids
