-- read.lua: reads many job hashes of one queue in one command, for the same
-- reason stats.lua is a script: one command follows MOVED and ASK on a
-- cluster, where a pipeline of HGETALLs would not.
--
-- KEYS[1]  first job hash (one KEYS entry per job)
-- ARGV[1]  unused (every script takes at least one argument)
-- Returns: one {field, value, ...} array per key, empty for a missing hash

local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGETALL', key)
end
return out
