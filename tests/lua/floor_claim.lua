-- floor_claim.lua (benchmark only): the reference design's own claim writes
-- for a batch, nothing else: the oldest ids move from pending to processing
-- (one LRANGE, LTRIM and LPUSH for the batch), and each job is stamped
-- (status, claim time, token, attempts + 1) and read for its payload. No
-- checks, no leases set, no repeat detection.
--
-- KEYS[1]  pending list
-- KEYS[2]  processing list
-- ARGV[1]  job hash prefix
-- ARGV[2..] one claim token per job wanted
-- Returns: list of { id, token, payload }

local want = #ARGV - 1
local ids = redis.call('LRANGE', KEYS[1], -want, -1)
if #ids == 0 then
  return {}
end
redis.call('LTRIM', KEYS[1], 0, -(#ids + 1))
local oldest_first = {}
for i = #ids, 1, -1 do
  oldest_first[#oldest_first + 1] = ids[i]
end
redis.call('LPUSH', KEYS[2], unpack(oldest_first))
local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local out = {}
for i, id in ipairs(oldest_first) do
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'attempts', 'payload')
  local token = ARGV[i + 1]
  redis.call('HSET', key, 'status', 'processing', 'claimed_at_ms', now, 'claim_token', token,
    'attempts', tostring(tonumber(f[1]) + 1))
  out[i] = { id, token, f[2] }
end
return out
