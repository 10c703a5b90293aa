-- common.lua: helpers prepended to every operation script (see scripts.rs).
--
-- A helper touches only keys its caller received in KEYS, plus job hashes
-- named by ids read from a list or sorted set: those are derived from the
-- job-hash prefix, the one documented exception to "every key in KEYS"
-- (in the hash-tagged layout they share the queue's slot).
--
-- Each operation fills the table Q with the names it has, before calling a
-- helper that needs them: Q.prefix, Q.channel, Q.processing, Q.pending,
-- Q.failed, Q.leases, Q.stats, Q.settled, Q.failed_cap, Q.cancelled.
--
-- The rule every script keeps: read and validate everything first, write
-- last, and run nothing after the first write that can fail. Redis keeps
-- the writes of a script that stops with an error, so an error after a
-- write leaves a half-done change: a job out of one list and in no other, a
-- new state without its counter or event. What could fail is read through
-- helpers that report instead:
--   * job hashes through `read_job`: a key of another type would answer
--     WRONGTYPE, and while a cluster migrates the queue's slot a hash that
--     has already moved answers "non local key" (and one that has not
--     arrived yet reads as missing on the importing node);
--   * queue keys from KEYS are checked by `expect` before the first write;
--   * counters are added by `count`, which survives a counter that is not
--     a number.
-- A job whose hash cannot be read here ('elsewhere') is left as and where
-- it is, for a later call once the migration is over.

local Q = { pushed = {} }

-- Redis before 5.0 refuses writes after TIME unless effects are replicated;
-- from 7.0 this call is a no-op.
redis.replicate_commands()

-- Limits of the numbers a job hash may hold, the same as jobqueue-rules'
-- (a unit test in protocol.rs checks they agree): counts fit a u32, a lease
-- lasts MIN_VISIBILITY_MS to MAX_DURATION_MS, a TTL at most a year.
local MAX_COUNT = 4294967295
local MIN_VISIBILITY_MS = 100
local MAX_DURATION_MS = 31536000000
local MAX_TTL_S = 31536000
-- Largest timestamp accepted (ms); 15 digits stay exact in a Lua number.
local MAX_TIMESTAMP_MS = 999999999999999

-- Most ids one call trims off a history list or checks in one sweep step.
local STEP = 100

-- One clock for every timestamp: the Redis server's (fixes reference bug 8.8, docs/reference-bugs.md#88-timestamps-come-from-client-clocks).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integer milliseconds as a decimal string, never in exponent notation.
local function ms(n)
  return string.format('%d', n)
end

-- ms(n), formatted once per script call for each n: the jobs of a batch
-- mostly share their deadlines, attempt counts and keep-until times.
local ms_texts = {}
local function ms_once(n)
  local s = ms_texts[n]
  if not s then
    s = ms(n)
    ms_texts[n] = s
  end
  return s
end

-- Publishes the reference event shape, inside the script that changed the
-- state (fixes reference bug 8.5, docs/reference-bugs.md#85-events-are-published-outside-the-script).
local function publish(id, status)
  redis.call('PUBLISH', Q.channel,
    '{"id":' .. cjson.encode(id) .. ',"status":"' .. status .. '"}')
end

-- The leases set's member for a claim: the id and the claim's token, so a
-- lease names the claim it belongs to, not just the job. The settled set
-- uses the same form.
local function lease(id, token)
  return id .. ':' .. token
end

-- A stored number: decimal digits only, at most 15 of them, within lo..hi.
-- Lua's tonumber also takes "nan", "inf", "0x10", "1e3", " 5" and "-1",
-- which would make every comparison with them false (a lease that never
-- expires, a job requeued for ever). Returns the number, or nil.
local function integer(s, lo, hi)
  if type(s) ~= 'string' or #s == 0 or #s > 15 or not string.find(s, '^%d+$') then
    return nil
  end
  local n = tonumber(s)
  if n < lo or n > hi then
    return nil
  end
  return n
end

-- The reason a stored number was refused.
local function malformed(field, value, lo, hi)
  local why = 'not a number'
  if type(value) == 'string' and string.find(value, '^%d+$') then
    why = 'out of range (' .. ms(lo) .. ' to ' .. ms(hi) .. ')'
  end
  return 'invalid job hash: ' .. field .. ' is "' .. tostring(value) .. '", ' .. why
end

-- Reads attempts, max_attempts and visibility_ms from fields already fetched,
-- falling back to the queue defaults for fields the reference never writes.
-- Returns attempts, max, visibility, or nil and the reason they are unusable.
local function job_numbers(attempts, max, vis, default_max, default_vis)
  local a = integer(attempts or '0', 0, MAX_COUNT)
  if a == nil then
    return nil, malformed('attempts', attempts, 0, MAX_COUNT)
  end
  local m = integer(max or default_max, 1, MAX_COUNT)
  if m == nil then
    return nil, malformed('max_attempts', max, 1, MAX_COUNT)
  end
  local v = integer(vis or default_vis, MIN_VISIBILITY_MS, MAX_DURATION_MS)
  if v == nil then
    return nil, malformed('visibility_ms', vis, MIN_VISIBILITY_MS, MAX_DURATION_MS)
  end
  return a, m, v
end

-- Whether this node is importing the slot of key: a cluster migration of
-- the queue's slot towards it is under way. A script served here meanwhile
-- sees only the keys moved so far, so a job hash that reads as missing may
-- still be on the node the slot comes from. Asked once per script, and only
-- when a hash reads as missing.
local importing_slot
local function importing(key)
  if importing_slot == nil then
    importing_slot = false
    local info = redis.call('INFO', 'cluster')
    if string.find(info, 'cluster_enabled:1', 1, true) then
      local mark = '[' .. redis.call('CLUSTER', 'KEYSLOT', key) .. '-<-'
      for line in string.gmatch(redis.call('CLUSTER', 'NODES'), '[^\n]+') do
        if string.find(line, 'myself', 1, true) and string.find(line, mark, 1, true) then
          importing_slot = true
        end
      end
    end
  end
  return importing_slot
end

-- Reads fields of the job hash at key, never failing. Returns
--   'hash', values     the hash is here (a field it lacks reads as false);
--   'none'             there is no such key;
--   'wrongtype', type  the key holds another type: it cannot be a job;
--   'elsewhere'        not readable here now: a slot migration moved it
--                      away, or has not brought it yet.
local function read_job(key, ...)
  local n = select('#', ...)
  -- One command on the common path: the fields of a job hash that is here
  -- (a real job always has the first field asked for, its status or token).
  -- Only an error or an all-empty answer needs TYPE to say what the key is.
  if n > 0 then
    -- One field (a status check): HGET, cheaper than HMGET's table.
    local got
    if n == 1 then
      got = redis.pcall('HGET', key, ...)
      if type(got) ~= 'table' then
        got = { got }
      end
    else
      got = redis.pcall('HMGET', key, ...)
    end
    if got.err then
      if string.sub(got.err, 1, 9) ~= 'WRONGTYPE' then
        return 'elsewhere'
      end
      -- Another type: TYPE below names it.
    else
      for i = 1, n do
        if got[i] then
          return 'hash', got
        end
      end
    end
  end
  local t = redis.pcall('TYPE', key)
  if t.err then
    return 'elsewhere'
  end
  t = t.ok
  if t == 'hash' then
    if n == 0 then
      return 'hash', {}
    end
    return 'hash', redis.call('HMGET', key, ...)
  elseif t == 'none' then
    if importing(key) then
      return 'elsewhere'
    end
    return 'none'
  end
  return 'wrongtype', t
end

-- Why a key that is not a job hash was dropped.
-- True when s is valid UTF-8 (as Rust's str accepts it: no overlong forms,
-- no surrogates, nothing past U+10FFFF). An id that is not cannot be named
-- by a client that speaks UTF-8, so a claim fails it instead of handing it
-- out.
local function is_utf8(s)
  -- Plain ASCII, as ids almost always are: valid, found in one scan.
  if not string.find(s, '[\128-\255]') then
    return true
  end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c < 0x80 then
      len = 1
    elseif c >= 0xC2 and c <= 0xDF then
      len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else
      return false
    end
    if i + len - 1 > n then
      return false
    end
    for j = i + 1, i + len - 1 do
      local b = string.byte(s, j)
      if j == i + 1 then
        if b < lo or b > hi then
          return false
        end
      elseif b < 0x80 or b > 0xBF then
        return false
      end
    end
    i = i + len
  end
  return true
end

local function not_a_job(kind, t)
  if kind == 'wrongtype' then
    return 'the job key holds a ' .. t .. ', not a hash'
  end
  return 'no job hash for this id'
end

-- Stops the script before its first write when a key from KEYS holds
-- another type than kind ('none' is fine: the write creates it): writing
-- to it later would fail half way through.
local function expect(key, kind)
  local t = redis.call('TYPE', key).ok
  if t ~= kind and t ~= 'none' then
    error(redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. kind))
  end
end

-- Checks the queue keys a claim and a sweep step both write (set in Q
-- first), before either writes anything.
local function expect_queue_keys()
  expect(Q.pending, 'list')
  expect(Q.processing, 'list')
  expect(Q.leases, 'zset')
  expect(Q.failed, 'list')
  expect(Q.stats, 'hash')
  expect(Q.settled, 'zset')
end

-- Adds n to a counter of the stats hash. HINCRBY fails on a field that
-- holds anything but an integer (written by hand or another tool); such a
-- counter starts again from n, with a warning in the Redis log, instead of
-- failing the script after its state change.
local function count(field, n)
  local r = redis.pcall('HINCRBY', Q.stats, field, n)
  if type(r) == 'table' and r.err then
    redis.log(redis.LOG_WARNING, 'jobqueue: ' .. Q.stats .. ' ' .. field ..
      ' was not an integer (' .. r.err .. '); it starts again from ' .. n)
    redis.call('HSET', Q.stats, field, n)
  end
end

-- The settled set (Q.settled) holds two kinds of member:
--   'id:token', scored by a time (ms) until which it is kept: that claim
--     ended (completed, failed, released), so a repeated settle with the
--     token answers "duplicate" even once the hash is gone or a later claim
--     settled the job again;
--   'id:', scored by minus the time the job became a dead letter: the
--     queue's dead letters, so the sweep can find one whose listing another
--     client trimmed off `failed` (see reclaim.lua).

-- Remembers that the claim of id with token ended, until the time given.
local function remember(id, token, until_ms)
  redis.call('ZADD', Q.settled, ms(until_ms), lease(id, token))
end

-- Forgets ended claims kept past their time, and the soonest to go when
-- more than cap are kept: at most STEP of each per call.
local function forget(now, cap)
  local old = redis.call('ZRANGEBYSCORE', Q.settled, '(0', ms(now), 'LIMIT', 0, STEP)
  if #old > 0 then
    redis.call('ZREM', Q.settled, unpack(old))
  end
  local over = redis.call('ZCOUNT', Q.settled, '(0', '+inf') - cap
  if over > 0 then
    local soonest = redis.call('ZRANGEBYSCORE', Q.settled, '(0', '+inf', 'LIMIT', 0, math.min(over, STEP))
    redis.call('ZREM', Q.settled, unpack(soonest))
  end
end

-- True when id is still in list (LPOS, Redis 6.0.6; on an older Redis the
-- answer is "maybe", which keeps what it guards).
local function listed(list, id)
  local at = redis.pcall('LPOS', list, id)
  if type(at) == 'table' then
    return true
  end
  return at ~= false
end

-- Trims list, a history of jobs in state status, to cap entries from its
-- old end, at most budget (default STEP) per call. The hash of an id
-- trimmed off is deleted when it is still in that state (so a dead letter's
-- hash lives exactly as long as its listing, reference bug 8.14, docs/reference-bugs.md#814-history-outlives-job-hashes),
-- unless the id is still listed (this script listed it again). An id whose
-- hash cannot be read here stops the trim: the list stays over its cap
-- until a later call, never half-trimmed.
--
-- The ids to go are read in one LRANGE and judged first; then one LTRIM
-- and one DEL do the writes, so a trim costs about one command per id.
local function trim_history(list, cap, status, budget)
  local over = math.min(redis.call('LLEN', list) - cap, budget or STEP)
  if over <= 0 then
    return
  end
  local tail = redis.call('LRANGE', list, -over, -1)
  local gone, judged = {}, 0
  for i = #tail, 1, -1 do
    local old = tail[i]
    local kind, f = read_job(Q.prefix .. old, 'status')
    if kind == 'elsewhere' then
      break
    end
    judged = judged + 1
    -- A job that moved on (sent back for another try) loses only its entry.
    if not (kind == 'hash' and f[1] ~= status) then
      gone[#gone + 1] = { old, kind == 'hash' }
    end
  end
  if judged == 0 then
    return
  end
  redis.call('LTRIM', list, 0, -(judged + 1))
  local keys, members = {}, {}
  for _, g in ipairs(gone) do
    local old, has_hash = g[1], g[2]
    -- Listed again by this script: its new listing keeps the hash.
    if not (Q.pushed[old] and listed(list, old)) then
      if has_hash then
        keys[#keys + 1] = Q.prefix .. old
      end
      if status == 'failed' then
        members[#members + 1] = lease(old, '')
      end
    end
  end
  if #keys > 0 then
    redis.call('DEL', unpack(keys))
  end
  if #members > 0 then
    redis.call('ZREM', Q.settled, unpack(members))
  end
end

-- Pushes ids (a list, oldest first) onto a history list in one LPUSH and
-- trims the list back to cap entries.
local function push_history(list, ids, cap, status)
  for _, id in ipairs(ids) do
    Q.pushed[id] = true
  end
  redis.call('LPUSH', list, unpack(ids))
  trim_history(list, cap, status, math.max(STEP, #ids))
end

-- The unique lock named by digest (a job's unique_digest): the key is
-- derived from the job-hash prefix (queue:{name}:job: gives
-- queue:{name}:unique:), so it is in the queue's slot, like the job hashes
-- derived from it (the documented exception). nil when digest is not a hex
-- digest.
local function unique_lock(digest)
  if type(digest) ~= 'string' or #digest > 64 or not string.match(digest, '^%x+$')
      or string.sub(Q.prefix, -4) ~= 'job:' then
    return nil
  end
  return string.sub(Q.prefix, 1, -5) .. 'unique:' .. digest
end

-- Whether a job with status still holds a unique lock taken in mode
-- ("window" locks hold for their whole TTL, whatever the job does).
local function holds_unique(mode, status)
  if mode == 'window' or status == 'pending' or status == 'scheduled' then
    return true
  end
  return mode == 'completed' and status == 'processing'
end

-- Releases job id's unique lock (digest and mode as its hash holds them)
-- when the lock still names that job: its hold has ended. A window lock is
-- left to its TTL. A lock that cannot be read here (a slot migration) is
-- left too: its TTL ends it, and so does the next enqueue of its key, which
-- finds the job finished.
local function release_unique(id, digest, mode)
  if not digest or mode == 'window' then
    return
  end
  local lock = unique_lock(digest)
  if lock and redis.pcall('GET', lock) == id then
    redis.pcall('DEL', lock)
  end
end

-- release_unique for a job whose unique fields were not read yet (the rare
-- paths: a dead letter, a cancel).
local function release_unique_of(id)
  local f = redis.pcall('HMGET', Q.prefix .. id, 'unique_digest', 'unique_mode')
  if type(f) == 'table' and not f.err and f[1] then
    release_unique(id, f[1], f[2])
  end
end

-- Flow control (docs/data-model.md#flow-control). A job waits in one of
-- the queue's lanes: `pending` (priority 0, the reference list), a priority
-- level's list `pending:<p>` (p in MIN_PRIORITY..MAX_PRIORITY, not 0), or
-- its rate key's lane `keyed:<k>`. The lanes, the `keys` sorted set of rate
-- keys with jobs waiting (scored by when each is ready again, ms), the
-- `wake` list, the `throttle` hash (rate-limit state) and the key leases
-- `key-leases:<k>` are derived from the pending key's name (Q.pending),
-- the second documented exception to "every key in KEYS": they share its
-- prefix, hence its slot in the hash-tagged layout.
local MIN_PRIORITY, MAX_PRIORITY = -3, 3
local MAX_RATE_KEY = 128

-- `queue:{name}:`, the prefix of every key of the queue.
local function queue_base()
  return string.sub(Q.pending, 1, -8)
end

-- The level of a stored priority field: an integer in range, else 0 (a
-- malformed value never strands a job).
local function priority_level(value)
  if type(value) ~= 'string' or not string.find(value, '^%-?%d$') then
    return 0
  end
  local p = tonumber(value)
  if p < MIN_PRIORITY or p > MAX_PRIORITY then
    return 0
  end
  return p
end

-- A usable rate key: 1 to MAX_RATE_KEY printable ASCII bytes, no space.
local function rate_key_ok(k)
  return type(k) == 'string' and #k > 0 and #k <= MAX_RATE_KEY and not string.find(k, '[^\33-\126]')
end

-- The list a ready job of this priority and rate key waits in, and its
-- rate key when it has a usable one.
local function lane_of(priority, rate_key)
  if rate_key_ok(rate_key) then
    return queue_base() .. 'keyed:' .. rate_key, rate_key
  end
  local p = priority_level(priority)
  if p == 0 then
    return Q.pending, nil
  end
  return Q.pending .. ':' .. ms(p), nil
end

-- The lists of the priority levels, highest first, `pending` among them.
local function priority_lanes()
  local lanes = {}
  for p = MAX_PRIORITY, MIN_PRIORITY, -1 do
    lanes[#lanes + 1] = p == 0 and Q.pending or Q.pending .. ':' .. ms(p)
  end
  return lanes
end

-- `levels`: the set of priority levels (other than 0) whose lanes may hold
-- jobs, so a claim reads only those lanes (a queue without priorities pays
-- one SMEMBERS, not six list reads). make_ready adds a level; a claim that
-- finds its lane empty removes it.
local function levels_key()
  return queue_base() .. 'levels'
end

-- Leaves one token in the queue's wake list (never more): an idle runner
-- blocks on it as well as on pending, so a job in a lane that BLMOVE on
-- pending cannot see, a freed slot under a cap, or a change of limits wakes
-- it at once.
local function wake()
  local w = queue_base() .. 'wake'
  if redis.pcall('LLEN', w) == 0 then
    redis.pcall('LPUSH', w, '1')
  end
end

-- Puts id in its lane: behind every job waiting there, or first in line
-- (front). A rate key's lane is registered in `keys` (ready now unless the
-- key is throttled already); a job outside `pending` wakes an idle runner.
local function make_ready(id, priority, rate_key, front)
  local list, k = lane_of(priority, rate_key)
  local push = front and 'RPUSH' or 'LPUSH'
  local r = redis.pcall(push, list, id)
  if type(r) == 'table' and r.err then
    -- A lane key of another type (written by hand): the job waits in
    -- pending, which the caller checked, rather than nowhere.
    list, k = Q.pending, nil
    redis.call(push, list, id)
  end
  if k then
    redis.pcall('ZADD', queue_base() .. 'keys', 'NX', '0', k)
  elseif list ~= Q.pending then
    redis.pcall('SADD', levels_key(), ms(priority_level(priority)))
  end
  if list ~= Q.pending then
    wake()
  end
end

-- The priority and rate key stored in id's hash (nil when unreadable: the
-- job then waits in pending).
local function lane_fields(id)
  local f = redis.pcall('HMGET', Q.prefix .. id, 'priority', 'rate_key')
  if type(f) ~= 'table' or f.err then
    return nil, nil
  end
  return f[1], f[2]
end

-- Takes id out of whichever lane holds it (its hash names the lane;
-- pending is looked at too, for a job enqueued by a reference client).
-- Returns how many entries went.
local function unlist(id)
  local list = lane_of(lane_fields(id))
  local n = 0
  if list ~= Q.pending then
    local r = redis.pcall('LREM', list, 0, id)
    n = type(r) == 'number' and r or 0
  end
  return n + redis.call('LREM', Q.pending, 0, id)
end

-- The lease set of rate key k: the claims of its jobs now held, so a cap
-- per key counts only its own jobs.
local function key_leases(k)
  return queue_base() .. 'key-leases:' .. k
end

-- Drops the claim (id, token) from its rate key's lease set, when the job
-- has a key, and makes a key that waited for a free slot ready again.
-- rate_key: the job's field when the caller read it, else nil (read here).
local function drop_key_lease(id, token, rate_key)
  if rate_key == nil then
    local _, k = lane_fields(id)
    rate_key = k
  end
  if rate_key_ok(rate_key) and redis.pcall('ZREM', key_leases(rate_key), lease(id, token)) == 1 then
    if redis.pcall('ZADD', queue_base() .. 'keys', 'XX', 'CH', '0', rate_key) == 1 then
      wake()
    end
  end
end

-- Workflows (docs/data-model.md#workflows). A child of a batch (its hash
-- has `batch`, "<queue>/<batch id>") and a step of a chain with a step
-- after it (`chain`, the rest of the chain as JSON) report how they ended
-- through their queue's outbox: the sorted set Q.outbox (id -> when
-- written, ms) and the hash Q.entries (id -> the entry as JSON: outcome,
-- detail, batch, chain), written in the same script as the end itself, so
-- a crash cannot come between the two. Both come in KEYS. Runners relay
-- the entries to the batch (or enqueue the next step) and delete them
-- after; a relay repeated is harmless.

-- Checks, before the first write, the keys a job's end writes besides the
-- job's own: the cancelled history and the outbox (Q.cancelled, Q.outbox
-- and Q.entries set first).
local function expect_ends()
  expect(Q.cancelled, 'list')
  expect(Q.outbox, 'zset')
  expect(Q.entries, 'hash')
end

-- Records in the outbox that job id ended: outcome 'ok', 'failed',
-- 'cancelled' or 'deleted'; detail is the result JSON of a chain step that
-- completed, else the reason. batch and chain are the job's fields when the
-- caller read them (false when absent), nil to read them here. A job that is
-- in no batch, or a chain step that did not complete, writes nothing. The
-- outbox was checked by expect_ends. A later end of the same job (a dead
-- letter revived) replaces an entry not yet relayed.
local function report_end(id, outcome, detail, now, batch, chain)
  if batch == nil then
    local f = redis.pcall('HMGET', Q.prefix .. id, 'batch', 'chain')
    if type(f) ~= 'table' or f.err then
      return
    end
    batch, chain = f[1], f[2]
  end
  if outcome ~= 'ok' then
    chain = false
  end
  if not batch and not chain then
    return
  end
  local entry = cjson.encode({
    outcome = outcome,
    detail = (chain or outcome ~= 'ok') and detail or '',
    batch = batch or '',
    chain = chain or '',
  })
  redis.call('HSET', Q.entries, id, entry)
  redis.call('ZADD', Q.outbox, ms(now), id)
end

-- Moves a job to the dead letters with a reason. The caller has read the
-- job's hash here and taken the id out of whatever list held it; token is
-- the claim whose lease goes with it ('' when there is none).
local function bury(id, reason, now, token)
  local key = Q.prefix .. id
  release_unique_of(id)
  redis.call('HSET', key, 'status', 'failed', 'last_error', reason,
    'last_error_at_ms', ms(now), 'failed_at_ms', ms(now), 'claim_token', '')
  redis.call('PERSIST', key)
  -- Before the history push, which may trim hashes.
  report_end(id, 'failed', reason, now)
  if token ~= '' then
    redis.call('ZREM', Q.leases, lease(id, token))
    drop_key_lease(id, token)
  end
  redis.call('ZADD', Q.settled, ms(-now), lease(id, ''))
  push_history(Q.failed, { id }, Q.failed_cap, 'failed')
  count('failed_total', 1)
  publish(id, 'failed')
end

-- Ends a job that will not run again without a failure of its own:
-- cancelled by a caller, or expired (it did not start by its expires_at_ms).
-- reason says which and why; counter is 'cancelled_total' or
-- 'expired_total'. The job is listed in the cancelled history (capped like
-- the dead letters, its hash kept while listed) with status "cancelled". The
-- caller has read the job's hash here and taken the id out of whatever list
-- held it; token is the claim whose lease goes with it ('' when none).
local function end_cancelled(id, reason, now, token, counter)
  local key = Q.prefix .. id
  release_unique_of(id)
  redis.call('HSET', key, 'status', 'cancelled', 'cancel_reason', reason,
    'cancelled_at_ms', ms(now), 'claim_token', '')
  redis.call('PERSIST', key)
  report_end(id, 'cancelled', reason, now)
  if token ~= '' then
    redis.call('ZREM', Q.leases, lease(id, token))
    drop_key_lease(id, token)
  end
  push_history(Q.cancelled, { id }, Q.failed_cap, 'cancelled')
  count(counter, 1)
  publish(id, 'cancelled')
end

-- A job's stored expires_at_ms, when it has a usable one: a job that has
-- not started by then never runs.
local function expires_at(value)
  return integer(value, 0, MAX_TIMESTAMP_MS)
end

-- The reason an expired job ends with.
local function expired_reason(deadline)
  return 'expired: not started by its deadline (expires_at_ms ' .. ms(deadline) .. ')'
end

-- Puts a job whose claim ran out back in pending, or buries it when the claim
-- that ran out was its last allowed attempt (fixes reference bug 8.1, docs/reference-bugs.md#81-poison-jobs-loop-forever).
-- The caller has read the job's hash here and taken the id out of processing.
local function requeue_or_bury(id, attempts, max, why, now, token)
  if attempts >= max then
    bury(id, string.format('%s on attempt %d of %d; no attempts left', why, attempts, max), now, token)
    return 'failed'
  end
  redis.call('HSET', Q.prefix .. id, 'status', 'pending', 'reclaimed_at_ms', ms(now),
    'claim_token', '', 'claimed_at_ms', '0')
  local priority, rate_key = lane_fields(id)
  if token ~= '' then
    redis.call('ZREM', Q.leases, lease(id, token))
    drop_key_lease(id, token, rate_key or false)
  end
  make_ready(id, priority, rate_key, false)
  count('reclaimed_total', 1)
  publish(id, 'reclaimed')
  return 'reclaimed'
end
