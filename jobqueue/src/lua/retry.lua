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
-- A unique dead letter takes its unique lock back (its key derived from the
-- job-hash prefix: the documented exception) for its window, or is not
-- revived while another job holds that lock: it stays a dead letter, and the
-- reply names the holder.
-- A job with a priority or a rate key goes to its own lane instead of
-- pending (derived from the pending key: the documented exception, see
-- common.lua's flow-control helpers).
--
-- KEYS[1]  failed list
-- KEYS[2]  pending list
-- KEYS[3]  stats hash
-- ARGV[1]  job hash prefix (ids come from the failed list, so their hash keys
--          are derived here: the documented exception)
-- ARGV[2]  the id to retry, or "" to retry the oldest dead letters
-- ARGV[3]  with ARGV[2] = "": most entries to take off the failed list
-- Returns: { revived ids, entries taken off the failed list, length of the
--          failed list before this call, refused: a flat list of id and the
--          id of the job holding its unique lock }. An entry whose job is
--          not a dead letter (no hash, another status, listed twice) is
--          taken off the list and not revived.

Q.prefix = ARGV[1]
local revived, refused = {}, {}

-- True when id's hash says failed; a key that is not a hash reads as not
-- failed rather than failing the script.
local function is_dead(id)
  return redis.pcall('HGET', ARGV[1] .. id, 'status') == 'failed'
end

-- For a unique dead letter: the id of another job that holds its lock, or
-- nil when the lock is free to take back (then take tells how).
local function unique_holder(id)
  local f = redis.pcall('HMGET', ARGV[1] .. id, 'unique_digest', 'unique_mode', 'unique_for_ms')
  if type(f) ~= 'table' or f.err or not f[1] then
    return nil
  end
  local lock = unique_lock(f[1])
  if not lock then
    return nil
  end
  local held = redis.pcall('GET', lock)
  if type(held) == 'string' and held ~= id then
    local got = redis.pcall('HMGET', ARGV[1] .. held, 'status', 'unique_mode')
    if type(got) == 'table' and not got.err and holds_unique(got[2] or f[2], got[1]) then
      return held
    end
  end
  local window = integer(f[3], 1, MAX_DURATION_MS)
  return nil, { lock, window }
end

-- The revived jobs that go back to pending itself (in one LPUSH).
local plain = {}

local function revive(id, take)
  if take and take[2] then
    redis.call('SET', take[1], id, 'PX', take[2])
  end
  local key = ARGV[1] .. id
  redis.call('HSET', key, 'status', 'pending', 'attempts', '0', 'claim_token', '', 'claimed_at_ms', '0')
  redis.call('PERSIST', key)
  local f = redis.call('HMGET', key, 'priority', 'rate_key')
  if f[1] or f[2] then
    -- A job with a priority or a rate key goes back to its own lane.
    Q.pending, Q.prefix = KEYS[2], ARGV[1]
    make_ready(id, f[1], f[2], false)
  else
    plain[#plain + 1] = id
  end
  revived[#revived + 1] = id
end

-- Pushes the revived ids, oldest first (so the oldest runs first), and counts them.
local function finish()
  for c = 1, #plain, 1000 do
    redis.call('LPUSH', KEYS[2], unpack(plain, c, math.min(c + 999, #plain)))
  end
  if #revived > 0 then
    redis.call('HINCRBY', KEYS[3], 'revived_total', #revived)
  end
end

if ARGV[2] ~= '' then
  local id = ARGV[2]
  if is_dead(id) then
    local holder, take = unique_holder(id)
    if holder then
      return { revived, 0, 0, { id, holder } }
    end
    redis.call('LREM', KEYS[1], 0, id)
    revive(id, take)
    finish()
  end
  return { revived, 0, 0, refused }
end

local listed = redis.call('LLEN', KEYS[1])
local limit = tonumber(ARGV[3])
if limit == nil or limit < 1 then
  return { revived, 0, listed }
end
-- The oldest dead letters sit at the right end: read them, oldest first.
local ids = redis.call('LRANGE', KEYS[1], -limit, -1)
local dead, kept, seen = {}, {}, {}
for i = #ids, 1, -1 do
  local id = ids[i]
  if not seen[id] and is_dead(id) then
    local holder, take = unique_holder(id)
    if holder then
      kept[#kept + 1] = id
      refused[#refused + 1] = id
      refused[#refused + 1] = holder
    else
      dead[#dead + 1] = { id, take }
    end
  end
  seen[id] = true
end
redis.call('LTRIM', KEYS[1], 0, -#ids - 1)
-- Refused dead letters stay listed, at the old end, oldest last.
for i = #kept, 1, -1 do
  redis.call('RPUSH', KEYS[1], kept[i])
end
for _, d in ipairs(dead) do
  revive(d[1], d[2])
end
finish()
return { revived, #ids - #kept, listed, refused }
