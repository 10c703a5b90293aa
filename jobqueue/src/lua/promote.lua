-- promote.lua: moves scheduled jobs whose time has come (delayed jobs and
-- retries waiting out their backoff) to pending, oldest due first.
--
-- Each due job's hash is read before anything is written. A job whose hash
-- cannot be read here (a cluster slot migration) stays scheduled for a
-- later call; an entry with no job behind it (settled, deleted, purged, or
-- a key that is not a hash) leaves the scheduled set. A due job already
-- past its expires_at_ms ends as expired (status cancelled, with the
-- reason) instead of being moved: it could not start in time.
-- A job with a priority or a rate key goes to its own lane instead of
-- pending (derived from the pending key: the documented exception, see
-- common.lua's flow-control helpers).
--
-- KEYS[1]  scheduled sorted set (id -> due time, ms)
-- KEYS[2]  pending list
-- KEYS[3]  cancelled list
-- KEYS[4]  stats hash
-- KEYS[5]  outbox sorted set (ends of batch children and chain steps)
-- KEYS[6]  outbox entries hash
-- ARGV[1]  job hash prefix (ids come from the scheduled set, so their hash
--          keys are derived here: the documented exception)
-- ARGV[2]  most jobs to move in this call
-- ARGV[3]  events channel
-- ARGV[4]  cancelled history cap (the dead letters' cap)
-- Returns: { number moved, more due jobs waiting (0 or 1) }

Q.prefix, Q.cancelled, Q.stats, Q.channel = ARGV[1], KEYS[3], KEYS[4], ARGV[3]
Q.pending = KEYS[2]
Q.outbox, Q.entries = KEYS[5], KEYS[6]
Q.failed_cap = tonumber(ARGV[4])
expect(KEYS[1], 'zset')
expect(KEYS[2], 'list')
expect_ends()
expect(Q.stats, 'hash')
local now = now_ms()
local limit = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms(now), 'LIMIT', 0, limit)
local move, drop, expire = {}, {}, {}
for _, id in ipairs(due) do
  local kind, f = read_job(ARGV[1] .. id, 'status', 'expires_at_ms')
  local deadline = kind == 'hash' and expires_at(f[2])
  if kind == 'hash' and f[1] == 'scheduled' and deadline and now >= deadline then
    expire[#expire + 1] = { id, deadline }
  elseif kind == 'hash' and f[1] == 'scheduled' then
    move[#move + 1] = id
  elseif kind ~= 'elsewhere' then
    -- Only a job still waiting is moved: one settled or purged meanwhile is not.
    drop[#drop + 1] = id
  end
end
for _, id in ipairs(drop) do
  redis.call('ZREM', KEYS[1], id)
end
for _, e in ipairs(expire) do
  redis.call('ZREM', KEYS[1], e[1])
  end_cancelled(e[1], expired_reason(e[2]), now, '', 'expired_total')
end
for _, id in ipairs(move) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', ARGV[1] .. id, 'status', 'pending')
  make_ready(id, lane_fields(id))
end
local more = 0
if #due == limit and #move + #drop + #expire > 0 then
  more = 1
end
return { #move, more }
