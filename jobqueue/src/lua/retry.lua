-- retry.lua: sends dead letters back to pending for a fresh set of attempts
-- (attempts back to 0; last_error kept as history), one job or a bounded
-- batch of the oldest. Counts them in revived_total (failures that fail.lua
-- sends back for another attempt count in retried_total).
--
-- Every status is read before the first write. A batch takes its entries off
-- the right end of the failed list with one LTRIM, not one LREM each (an
-- LREM walks the whole list: 200 of them on a full list of 10,000 held Redis
-- for over 10 ms).
--
-- KEYS[1]  failed list
-- KEYS[2]  pending list
-- KEYS[3]  stats hash
-- ARGV[1]  job hash prefix (ids come from the failed list, so their hash keys
--          are derived here: the documented exception)
-- ARGV[2]  the id to retry, or "" to retry the oldest dead letters
-- ARGV[3]  with ARGV[2] = "": most entries to take off the failed list
-- Returns: { revived ids, entries taken off the failed list, length of the
--          failed list before this call }. An entry whose job is not a dead
--          letter (no hash, another status, listed twice) is taken off the
--          list and not revived.

local revived = {}

-- True when id's hash says failed; a key that is not a hash reads as not
-- failed rather than failing the script.
local function is_dead(id)
  return redis.pcall('HGET', ARGV[1] .. id, 'status') == 'failed'
end

local function revive(id)
  local key = ARGV[1] .. id
  redis.call('HSET', key, 'status', 'pending', 'attempts', '0', 'claim_token', '', 'claimed_at_ms', '0')
  redis.call('PERSIST', key)
  revived[#revived + 1] = id
end

-- Pushes the revived ids, oldest first (so the oldest runs first), and counts them.
local function finish()
  for c = 1, #revived, 1000 do
    redis.call('LPUSH', KEYS[2], unpack(revived, c, math.min(c + 999, #revived)))
  end
  if #revived > 0 then
    redis.call('HINCRBY', KEYS[3], 'revived_total', #revived)
  end
end

if ARGV[2] ~= '' then
  local id = ARGV[2]
  if is_dead(id) then
    redis.call('LREM', KEYS[1], 0, id)
    revive(id)
    finish()
  end
  return { revived, 0, 0 }
end

local listed = redis.call('LLEN', KEYS[1])
local limit = tonumber(ARGV[3])
if limit == nil or limit < 1 then
  return { revived, 0, listed }
end
-- The oldest dead letters sit at the right end: read them, oldest first.
local ids = redis.call('LRANGE', KEYS[1], -limit, -1)
local dead, seen = {}, {}
for i = #ids, 1, -1 do
  local id = ids[i]
  if not seen[id] and is_dead(id) then
    dead[#dead + 1] = id
  end
  seen[id] = true
end
redis.call('LTRIM', KEYS[1], 0, -#ids - 1)
for _, id in ipairs(dead) do
  revive(id)
end
finish()
return { revived, #ids, listed }
