-- floor_complete.lua (benchmark only): the reference design's own complete
-- writes for a batch, nothing else: per job the token check, LREM from
-- processing, the completed stamp, the hash's TTL and the event; one LPUSH
-- and LTRIM of the completed history for the batch. No settled set, no
-- counters, no deletion of trimmed hashes.
--
-- KEYS[1]  processing list
-- KEYS[2]  completed list
-- ARGV[1]  job hash prefix
-- ARGV[2]  events channel
-- ARGV[3..] per job: id, token, result JSON
-- Returns: the number of jobs completed

local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local done = {}
for i = 3, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 'claim_token') == token then
    redis.call('LREM', KEYS[1], -1, id)
    redis.call('HSET', key, 'status', 'completed', 'completed_at_ms', now, 'result', ARGV[i + 2])
    redis.call('EXPIRE', key, 300)
    redis.call('PUBLISH', ARGV[2], '{"id":' .. cjson.encode(id) .. ',"status":"completed"}')
    done[#done + 1] = id
  end
end
if #done > 0 then
  redis.call('LPUSH', KEYS[2], unpack(done))
  redis.call('LTRIM', KEYS[2], 0, 49)
end
return #done
