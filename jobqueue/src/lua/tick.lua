-- tick.lua: fires one due tick of a periodic schedule: enqueues its job and
-- moves the schedule to its next tick, in one step, at most once per tick
-- however many runners try.
--
-- Every runner serving the queue looks for due schedules about once a
-- second and computes the ticks from the stored expression and zone; this
-- script is the compare-and-set that makes one of them win. The caller says
-- which tick it expects next (the stored next_tick_ms): a runner that lost
-- the race finds it moved on and writes nothing. The job's id is derived
-- from the queue, the schedule and the tick, so even a repeat that got past
-- the check would find the job written and not write it again.
--
-- Misfire: when the tick fired is later than grace_ms behind the Redis
-- clock (no runner was up at its time), "skip" enqueues nothing for it and
-- counts it missed, and "once" enqueues one job, for the latest tick missed
-- (fire tick), however many were missed.
--
-- KEYS[1]  schedules sorted set (name -> next tick, ms)
-- KEYS[2]  the schedule's hash
-- KEYS[3]  pending list
-- KEYS[4]  stats hash
-- KEYS[5]  the job hash for this tick
-- ARGV[1]  the schedule's name
-- ARGV[2]  spec_ver the caller computed the ticks with
-- ARGV[3]  the tick the caller expects next (the stored next_tick_ms)
-- ARGV[4]  the tick to fire: the latest tick due (ms)
-- ARGV[5]  the tick after it (ms)
-- ARGV[6]  the job's id
-- Returns: { "fired", id } | { "skipped" } | { "moved" } (another runner
--          fired it, or the schedule changed or is gone) | { "early" }

Q.stats = KEYS[4]
expect(KEYS[1], 'zset')
expect(KEYS[2], 'hash')
expect(KEYS[3], 'list')
expect(Q.stats, 'hash')
local f = redis.call('HMGET', KEYS[2], 'spec_ver', 'next_tick_ms', 'misfire', 'grace_ms', 'job', 'payload',
  'max_attempts', 'visibility_ms')
if f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then
  return { 'moved' }
end
local expected, fire, after = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
if not (expected and fire and after) or expected > now then
  return { 'early' }
end
if fire < expected or fire > now or after <= fire then
  return redis.error_reply('ERR tick: ticks out of order (expected ' .. ARGV[3] .. ', fire ' .. ARGV[4] ..
    ', next ' .. ARGV[5] .. '); nothing written')
end
-- The tick's job key is in KEYS, so a cluster serves this script only on
-- the node that has the key's slot whole: no migration check is needed. One
-- EXISTS on the common path (the key is new): read_job's TYPE and its
-- cluster check cost this script about half its Redis time.
local kind = 'none'
if redis.call('EXISTS', KEYS[5]) == 1 then
  kind = redis.call('TYPE', KEYS[5]).ok
  if kind ~= 'hash' then
    return redis.error_reply('ERR tick: the job key of this tick holds a ' .. kind .. ', not a job; nothing written')
  end
end
local grace = tonumber(f[4] or '') or 0
local outcome
if now - fire > grace and f[3] == 'skip' then
  count('cron_missed_total', 1)
  outcome = { 'skipped' }
else
  if kind == 'none' then
    local fields = { 'id', ARGV[6], 'payload', f[6] or 'null', 'status', 'pending', 'attempts', '0',
      'enqueued_at_ms', ms(now), 'claim_token', '', 'job', f[5] or '', 'scheduled_for_ms', ms(fire),
      'schedule', ARGV[1] }
    if f[7] and f[7] ~= '' then
      fields[#fields + 1] = 'max_attempts'
      fields[#fields + 1] = f[7]
    end
    if f[8] and f[8] ~= '' then
      fields[#fields + 1] = 'visibility_ms'
      fields[#fields + 1] = f[8]
    end
    redis.call('HSET', KEYS[5], unpack(fields))
    redis.call('LPUSH', KEYS[3], ARGV[6])
    count('enqueued_total', 1)
  end
  count('cron_fired_total', 1)
  outcome = { 'fired', ARGV[6] }
end
redis.call('HSET', KEYS[2], 'last_tick_ms', ms(fire), 'last_job_id', ARGV[6], 'next_tick_ms', ms(after))
redis.call('ZADD', KEYS[1], ms(after), ARGV[1])
return outcome
