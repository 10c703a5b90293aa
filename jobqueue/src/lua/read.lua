-- read.lua: reads many job hashes of one queue in one command, for the same
-- reason stats.lua is a script: one command follows MOVED and ASK on a
-- cluster, where a pipeline of HGETALLs would not. A key holding another
-- type than a hash is no job, and reads as one that does not exist.
--
-- KEYS[1]  first job hash (one KEYS entry per job)
-- ARGV[1]  unused (every script takes at least one argument)
-- Returns: one {field, value, ...} array per key, empty for a missing hash

local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'hash' then
    out[i] = redis.call('HGETALL', key)
  else
    out[i] = {}
  end
end
return out
