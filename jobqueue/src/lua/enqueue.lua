-- enqueue.lua: writes a batch of new jobs, each hash together with its
-- pending entry (or its scheduled entry, for a job due later), so neither can
-- exist without the other (fixes reference bug 8.9, docs/reference-bugs.md#89-orphaned-entries-and-hashes).
--
-- Every job of the call is read and checked before the first write: a bad
-- job anywhere in the call refuses the whole call with an error and writes
-- nothing (Redis does not undo the writes of a script that fails half way).
-- Callers keep each call small (Queue::submit_many sends at most 200 jobs or
-- 256 KiB per call), so no call holds Redis for more than a few ms.
--
-- KEYS[1]   pending list
-- KEYS[2]   stats hash
-- KEYS[3]   scheduled sorted set (id -> due time, ms)
-- KEYS[4..] one job hash per job, in the order of the jobs in ARGV
-- ARGV[1]   number of shared extra fields S, then S field/value pairs that
--           every job of the call gets (job, max_attempts, visibility_ms,
--           completed_ttl_s, expires_in_ms: a batch of one kind of job sends
--           them once). expires_in_ms (decimal ms, at most a year) is not
--           stored as given: the job gets expires_at_ms, its due time (or
--           now, by the Redis clock) plus that much. unique_digest (hex),
--           unique_mode ("pending", "completed" or "window") and
--           unique_for_ms make the job unique (below). priority (an
--           integer from -3 to 3) and rate_key put the job in its lane
--           instead of pending (docs/data-model.md#flow-control).
--
-- A unique job takes the lock queue:{name}:unique:<digest> (its key is
-- derived from the job's key and the digest, and so is the key of the job
-- that holds it: the documented exception; both share the job's slot). When
-- the lock names another job that still holds it (by that job's mode: while
-- pending or scheduled; also while processing for "completed"; for "window",
-- while the lock lives), the job is a duplicate: nothing is written for it
-- and the reply names the job that holds the lock. A lock whose job is gone
-- or finished is taken over. The lock lives at most unique_for_ms.
-- ARGV[...] then per job: id, payload JSON, when ("" now, "+N" N ms from
--           now, "@N" at N ms since the epoch; N is decimal digits, at most
--           a year and a day ahead of the Redis clock), number of extra
--           fields E, then E field/value pairs of this job's own
-- Returns:  { the number of jobs written, duplicates: a flat list of job
--           number (1-based) and the id of the job holding its lock, for
--           each unique job not written }. A job whose hash already exists
--           is left alone and not counted: ids are 64 random bits, so that
--           only happens when a batch is retried after its reply was lost.
--           An error reply, with nothing written, when a job's arguments are
--           malformed (a when that is not a decimal time, or one that would
--           overflow the integer milliseconds a job hash stores), or when a
--           job's key holds another type than a hash.

-- How far ahead a job may be due: a year (the limit the Rust side checks)
-- and a day of slack for a client clock ahead of the Redis clock.
local MAX_AHEAD_MS = 366 * 24 * 3600 * 1000

Q.stats, Q.pending = KEYS[2], KEYS[1]
expect(KEYS[1], 'list')
expect(Q.stats, 'hash')
expect(KEYS[3], 'zset')
local clock = now_ms()
local now = ms(clock)

local function refuse(job, why)
  return redis.error_reply(string.format('ERR enqueue: job %d: %s; nothing written', job, why))
end

-- Pass 1: parse and check every job; no writes.
local jobs, planned = {}, {}
local shared = ARGV[1]
if shared == nil or not string.match(shared, '^%d+$') or #shared > 3 or 1 + tonumber(shared) * 2 > #ARGV then
  return redis.error_reply('ERR enqueue: the shared field count "' .. tostring(shared) ..
    '" is not a small number of pairs; nothing written')
end
shared = tonumber(shared)

-- An expires_in_ms value: decimal ms, at most MAX_AHEAD_MS; nil otherwise.
local function expires_in(value)
  if type(value) ~= 'string' or not string.match(value, '^%d+$') or #value > 15 then
    return nil
  end
  local n = tonumber(value)
  if n > MAX_AHEAD_MS then
    return nil
  end
  return n
end

-- Checks the expires_in_ms among the pairs ARGV[from..to]; the reason when
-- it is unusable.
local function check_pairs(from, to)
  for e = from, to, 2 do
    if ARGV[e] == 'expires_in_ms' and expires_in(ARGV[e + 1]) == nil then
      return 'expires_in_ms "' .. tostring(ARGV[e + 1]) .. '" is not a decimal number of ms up to a year'
    elseif ARGV[e] == 'priority' and (priority_level(ARGV[e + 1]) == 0 and ARGV[e + 1] ~= '0') then
      return 'priority "' .. tostring(ARGV[e + 1]) .. '" is not an integer from ' .. MIN_PRIORITY .. ' to ' .. MAX_PRIORITY
    elseif ARGV[e] == 'rate_key' and not rate_key_ok(ARGV[e + 1]) then
      return 'rate_key "' .. tostring(ARGV[e + 1]) .. '" is not 1 to ' .. MAX_RATE_KEY ..
        ' printable ASCII characters without spaces'
    end
  end
  return nil
end
local shared_problem = check_pairs(2, 1 + shared * 2)
if shared_problem then
  return redis.error_reply('ERR enqueue: shared fields: ' .. shared_problem .. '; nothing written')
end

-- The value of field name among the pairs ARGV[from..to], or nil.
local function pair(name, from, to)
  for e = from, to, 2 do
    if ARGV[e] == name then
      return ARGV[e + 1]
    end
  end
  return nil
end

local UNIQUE_MODES = { pending = true, completed = true, window = true }

-- Appends the pairs ARGV[from..to] to fields, expires_in_ms turned into
-- expires_at_ms counted from base.
local function copy_pairs(fields, from, to, base)
  for e = from, to, 2 do
    if ARGV[e] == 'expires_in_ms' then
      fields[#fields + 1] = 'expires_at_ms'
      fields[#fields + 1] = ms(base + expires_in(ARGV[e + 1]))
    else
      fields[#fields + 1] = ARGV[e]
      fields[#fields + 1] = ARGV[e + 1]
    end
  end
end
-- New ids almost never have a key yet: one EXISTS for the whole batch says
-- so, and then no key needs its own TYPE.
local none_exist = #KEYS < 4 or redis.call('EXISTS', unpack(KEYS, 4)) == 0
local a = 2 + shared * 2
-- Unique locks this call takes, by key: the id of the job taking each.
local locking = {}
local duplicates = {}
for k = 4, #KEYS do
  local n = k - 3
  local id, payload, when, extra = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if extra == nil then
    return refuse(n, 'missing arguments')
  end
  if not string.match(extra, '^%d+$') or #extra > 3 then
    return refuse(n, 'the extra field count "' .. extra .. '" is not a small number')
  end
  extra = tonumber(extra)
  if a + 3 + extra * 2 > #ARGV then
    return refuse(n, 'missing extra fields')
  end
  local due = 0
  if when ~= '' then
    local sign, digits = string.sub(when, 1, 1), string.sub(when, 2)
    -- Digits only, and few enough that Lua's double holds them exactly.
    if (sign ~= '+' and sign ~= '@') or not string.match(digits, '^%d+$') or #digits > 15 then
      return refuse(n, 'when "' .. when .. '" is not "", "+ms" or "@ms" with a decimal integer')
    end
    due = tonumber(digits)
    if sign == '+' then
      if due > MAX_AHEAD_MS then
        return refuse(n, 'a delay of ' .. digits .. ' ms is more than a year')
      end
      due = clock + due
    elseif due > clock + MAX_AHEAD_MS then
      return refuse(n, 'due at ' .. digits .. ' ms, more than a year ahead')
    end
  end
  local problem = check_pairs(a + 4, a + 3 + extra * 2)
  if problem then
    return refuse(n, problem)
  end
  local function field(name)
    return pair(name, a + 4, a + 3 + extra * 2) or pair(name, 2, 1 + shared * 2)
  end
  local lock, window, owner
  local digest = field('unique_digest')
  if digest then
    local mode, for_ms = field('unique_mode'), field('unique_for_ms')
    if not string.match(digest, '^%x+$') or #digest > 64 then
      return refuse(n, 'unique_digest "' .. digest .. '" is not a hex digest')
    end
    if not UNIQUE_MODES[mode or ''] then
      return refuse(n, 'unique_mode "' .. tostring(mode) .. '" is not pending, completed or window')
    end
    window = for_ms and string.match(for_ms, '^%d+$') and #for_ms <= 15 and tonumber(for_ms)
    if not window or window < 1 or window > MAX_AHEAD_MS then
      return refuse(n, 'unique_for_ms "' .. tostring(for_ms) .. '" is not 1 ms to a year')
    end
    local key = KEYS[k]
    local prefix = string.sub(key, 1, #key - #id)
    if string.sub(key, #prefix + 1) ~= id or string.sub(prefix, -4) ~= 'job:' then
      return refuse(n, 'the job key ' .. key .. ' is not the job prefix followed by the id')
    end
    lock = string.sub(prefix, 1, -5) .. 'unique:' .. digest
    owner = locking[lock]
    if owner == nil then
      local held = redis.pcall('GET', lock)
      if type(held) == 'table' and held.err then
        return refuse(n, 'its unique lock cannot be read here now (' .. held.err .. ')')
      end
      if held and held ~= id then
        if mode == 'window' then
          owner = held
        else
          local got = redis.pcall('HMGET', prefix .. held, 'status', 'unique_mode')
          if type(got) == 'table' and got.err then
            return refuse(n, 'the job holding its unique lock cannot be read here now')
          end
          if holds_unique(got[2] or mode, got[1]) then
            owner = held
          end
        end
      end
    end
    if owner then
      duplicates[#duplicates + 1] = n
      duplicates[#duplicates + 1] = owner
      lock = nil
    else
      locking[lock] = id
    end
  end
  local t = none_exist and 'none' or redis.call('TYPE', KEYS[k]).ok
  if t ~= 'none' and t ~= 'hash' then
    return refuse(n, 'WRONGTYPE the key of id ' .. id .. ' holds a ' .. t ..
      ', not a job hash: the id cannot be used for a job')
  end
  -- A key that exists already (a batch retried after a lost reply, or a
  -- caller-chosen id in use), or that an earlier job of this batch takes,
  -- is left alone.
  local fresh = t == 'none' and not planned[KEYS[k]]
  planned[KEYS[k]] = true
  jobs[n] = { key = KEYS[k], id = id, payload = payload, due = due, first = a + 4, extra = extra,
    fresh = fresh and not owner, lock = lock, window = window }
  a = a + 4 + extra * 2
end
if a ~= #ARGV + 1 then
  return refuse(#jobs + 1, 'more arguments than jobs')
end

-- Pass 2: write.
local ids = {}
local written = 0
for _, job in ipairs(jobs) do
  if job.fresh then
    written = written + 1
    if job.lock then
      redis.call('SET', job.lock, job.id, 'PX', job.window)
    end
    local fields = { 'id', job.id, 'payload', job.payload, 'status', 'pending', 'attempts', '0',
      'enqueued_at_ms', now, 'claim_token', '' }
    local base = math.max(job.due, clock)
    copy_pairs(fields, 2, 1 + shared * 2, base)
    copy_pairs(fields, job.first, job.first + job.extra * 2 - 1, base)
    if job.due > clock then
      fields[6] = 'scheduled'
      fields[#fields + 1] = 'scheduled_for_ms'
      fields[#fields + 1] = ms(job.due)
      redis.call('HSET', job.key, unpack(fields))
      redis.call('ZADD', KEYS[3], ms(job.due), job.id)
    else
      redis.call('HSET', job.key, unpack(fields))
      local priority, rate_key = pair('priority', 2, 1 + shared * 2), pair('rate_key', 2, 1 + shared * 2)
      priority = pair('priority', job.first, job.first + job.extra * 2 - 1) or priority
      rate_key = pair('rate_key', job.first, job.first + job.extra * 2 - 1) or rate_key
      if (priority and priority ~= '0') or rate_key then
        -- Its own lane (docs/data-model.md#flow-control).
        make_ready(job.id, priority, rate_key, false)
      else
        ids[#ids + 1] = job.id
      end
    end
  end
end
-- LPUSH in chunks: unpack is bounded by the Lua C stack.
for c = 1, #ids, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(ids, c, math.min(c + 999, #ids)))
end
if written > 0 then
  count('enqueued_total', written)
end
return { written, duplicates }
