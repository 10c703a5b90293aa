-- schedule.lua: writes or removes one periodic schedule of a queue.
--
-- "put" writes the schedule unless it is already there with the same
-- definition (spec_ver, a digest of the expression, zone, job, payload and
-- options): every runner that knows a #[job(cron)] puts it at start, and a
-- restart must never move a schedule. A changed definition is written with
-- the first tick the caller computed (after the later of now and the last
-- tick fired, so a fired tick never fires again).
-- "remove" deletes the schedule.
--
-- KEYS[1]  schedules sorted set (name -> next tick, ms)
-- KEYS[2]  the schedule's hash
-- ARGV[1]  "put" or "remove"
-- ARGV[2]  the schedule's name
-- ARGV[3..] "put": spec_ver, cron expression, time zone, job name, payload
--          JSON, misfire ("skip" or "once"), grace ms, max_attempts ("" for
--          the queue's), visibility_ms ("" for the queue's), first tick ms
-- Returns: "put": "written" or "unchanged"; "remove": 1 removed, 0 there
--          was no such schedule

expect(KEYS[1], 'zset')
expect(KEYS[2], 'hash')
local name = ARGV[2]
if ARGV[1] == 'remove' then
  local removed = redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], name)
  return removed
elseif ARGV[1] ~= 'put' then
  return redis.error_reply('ERR schedule: unknown mode "' .. tostring(ARGV[1]) .. '"; nothing written')
end
local spec_ver, first = ARGV[3], ARGV[12]
if not string.match(first or '', '^%d+$') or #first > 15 then
  return redis.error_reply('ERR schedule: the first tick "' .. tostring(first) .. '" is not a time in ms; nothing written')
end
if redis.call('HGET', KEYS[2], 'spec_ver') == spec_ver then
  return 'unchanged'
end
redis.call('HSET', KEYS[2], 'name', name, 'spec_ver', spec_ver, 'cron', ARGV[4], 'tz', ARGV[5],
  'job', ARGV[6], 'payload', ARGV[7], 'misfire', ARGV[8], 'grace_ms', ARGV[9],
  'max_attempts', ARGV[10], 'visibility_ms', ARGV[11], 'next_tick_ms', first)
redis.call('ZADD', KEYS[1], first, name)
return 'written'
