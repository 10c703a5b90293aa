-- limits.lua: writes a queue's fleet-wide limits (docs/data-model.md#flow-control).
--
-- Every claim reads them, so a change applies to every runner at its next
-- claim; the wake token also ends the wait of idle runners, and a runner
-- held back by a rate sleeps at most half a second before it claims again.
--
-- "set" replaces the fields it is given (an empty value removes one); a
-- set of the queue's own limits also marks them as the operator's
-- (`operator_set`).
-- "seed" writes the queue's own limits only while no operator has set them
-- (not even to nothing), and then only fields that are not set yet: what
-- #[job(rate = ...)] declares is a default every runner puts at start, and
-- a restart or a deploy must never revert an operator's change.
-- "key" sets (or, with an empty value, removes) one rate key's own limits.
--
-- KEYS[1]  limits hash
-- KEYS[2]  key-limits hash (rate key -> "rate period_ms burst max_running",
--          "-" for a limit not set)
-- KEYS[3]  wake list
-- ARGV[1]  "set", "seed" or "key"
-- ARGV[2]  "key": the rate key; else unused
-- ARGV[3..] "set"/"seed": field/value pairs of rate, period_ms, burst,
--          max_running, key_rate, key_period_ms, key_burst,
--          key_max_running (decimal, at least 1); "key": the value
-- Returns: the number of fields written or removed

local FIELDS = {
  rate = true, period_ms = true, burst = true, max_running = true,
  key_rate = true, key_period_ms = true, key_burst = true, key_max_running = true,
}
local mode = ARGV[1]
expect(KEYS[1], 'hash')
expect(KEYS[2], 'hash')
expect(KEYS[3], 'list')

-- A limit's number: decimal digits, 1 to MAX_COUNT (periods up to a year).
local function checked(field, value)
  local hi = (field == 'period_ms' or field == 'key_period_ms') and MAX_DURATION_MS or MAX_COUNT
  if value ~= '' and not integer(value, 1, hi) then
    error(redis.error_reply('ERR limits: ' .. field .. ' "' .. tostring(value) ..
      '" is not a whole number from 1 to ' .. ms(hi) .. '; nothing written'))
  end
end

local written = 0
if mode == 'key' then
  local k, value = ARGV[2], ARGV[3] or ''
  if not rate_key_ok(k) then
    return redis.error_reply('ERR limits: rate key "' .. tostring(k) .. '" is not 1 to ' .. MAX_RATE_KEY ..
      ' printable ASCII characters without spaces; nothing written')
  end
  local parts = {}
  for w in string.gmatch(value, '%S+') do
    parts[#parts + 1] = w
  end
  if value ~= '' and #parts ~= 4 then
    return redis.error_reply('ERR limits: a key\'s limits are four values; nothing written')
  end
  local names = { 'key_rate', 'key_period_ms', 'key_burst', 'key_max_running' }
  for i, w in ipairs(parts) do
    if w ~= '-' then
      checked(names[i], w)
    end
  end
  if value == '' then
    written = redis.call('HDEL', KEYS[2], k)
  else
    redis.call('HSET', KEYS[2], k, value)
    written = 1
  end
elseif mode == 'set' or mode == 'seed' then
  if mode == 'seed' and redis.call('HEXISTS', KEYS[1], 'operator_set') == 1 then
    return 0
  end
  if #ARGV % 2 ~= 0 then
    return redis.error_reply('ERR limits: fields and values do not pair up; nothing written')
  end
  for i = 3, #ARGV, 2 do
    if not FIELDS[ARGV[i]] then
      return redis.error_reply('ERR limits: unknown field "' .. tostring(ARGV[i]) .. '"; nothing written')
    end
    checked(ARGV[i], ARGV[i + 1])
  end
  for i = 3, #ARGV, 2 do
    local field, value = ARGV[i], ARGV[i + 1]
    if mode == 'set' and string.sub(field, 1, 4) ~= 'key_' then
      redis.call('HSET', KEYS[1], 'operator_set', '1')
    end
    if mode == 'seed' then
      if value ~= '' then
        written = written + redis.call('HSETNX', KEYS[1], field, value)
      end
    elseif value == '' then
      written = written + redis.call('HDEL', KEYS[1], field)
    else
      redis.call('HSET', KEYS[1], field, value)
      written = written + 1
    end
  end
else
  return redis.error_reply('ERR limits: unknown mode "' .. tostring(mode) .. '"')
end
if written > 0 and redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[3], '1')
end
return written
