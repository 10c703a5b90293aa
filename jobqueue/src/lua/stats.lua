-- stats.lua: reads a queue's depths and totals as one snapshot. A script
-- rather than a MULTI pipeline because a cluster client follows MOVED and
-- ASK for one command but not inside a transaction (a resharded queue
-- would fail its reads until the client's slot map caught up).
--
-- KEYS[1]  pending list
-- KEYS[2]  processing list
-- KEYS[3]  completed list
-- KEYS[4]  failed list
-- KEYS[5]  scheduled sorted set
-- KEYS[6]  paused flag
-- KEYS[7]  stats hash
-- KEYS[8]  cancelled list
-- ARGV[1]  unused (every script takes at least one argument)
-- Returns: {pending, processing, completed, failed, scheduled, paused (0/1),
--          {field, value, ...} of the stats hash, cancelled, waiting in
--          the priority lanes other than pending, waiting in the lanes of
--          rate keys (the first 1,000 keys counted), rate keys waiting}

Q.pending = KEYS[1]
local lanes = priority_lanes()
local prioritized = 0
for _, list in ipairs(lanes) do
  if list ~= Q.pending then
    prioritized = prioritized + redis.call('LLEN', list)
  end
end
local keys = redis.call('ZRANGE', queue_base() .. 'keys', 0, 999)
local keyed = 0
for _, k in ipairs(keys) do
  keyed = keyed + redis.call('LLEN', queue_base() .. 'keyed:' .. k)
end

return {
  redis.call('LLEN', KEYS[1]),
  redis.call('LLEN', KEYS[2]),
  redis.call('LLEN', KEYS[3]),
  redis.call('LLEN', KEYS[4]),
  redis.call('ZCARD', KEYS[5]),
  redis.call('EXISTS', KEYS[6]),
  redis.call('HGETALL', KEYS[7]),
  redis.call('LLEN', KEYS[8]),
  prioritized,
  keyed,
  redis.call('ZCARD', queue_base() .. 'keys'),
}
