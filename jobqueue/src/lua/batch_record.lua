-- batch_record.lua: records how children of one batch ended, and completes
-- the batch when the last of them is in: the callbacks are released in the
-- same call. Runners call it as they relay their queues' outboxes
-- (docs/data-model.md#workflows).
--
-- Exactly once: a child is recorded with HSETNX on its id, so a child
-- relayed twice (two runners, a relay repeated after a crash) counts once,
-- and the first end relayed wins. The batch turns "done" once, in the call that
-- sees every child recorded, and that call alone releases the callbacks.
-- Two last children relayed at the same moment by two runners are two calls
-- Redis runs one after the other: the second finds the batch done.
--
-- On completion, the on_complete callback's payload becomes the summary
-- {"batch", "queue", "total", "succeeded", "failed", "children",
-- "failures": [{"id", "queue", "outcome", "reason"}], "failures_omitted",
-- "payload": the payload it was given} and it goes to pending. At most
-- 1,000 failures are listed (the counts cover all), each reason cut to 256
-- bytes, so the call and the payload stay small. on_success is released the
-- same way when no child failed, else it ends as cancelled with the reason.
-- The batch's keys then expire after its keep_s.
--
-- The callback job hashes are derived from the job-hash prefix and the ids
-- the batch hash names (the documented exception); they share the slot.
--
-- KEYS[1]  batch hash
-- KEYS[2]  batch's settled hash ("queue/id" of each child ->
--          "outcome<TAB>queue<TAB>reason")
-- KEYS[3]  pending list of the batch's queue
-- KEYS[4]  stats hash
-- KEYS[5]  cancelled list
-- KEYS[6]  outbox sorted set of the batch's queue
-- KEYS[7]  outbox entries hash of the batch's queue
-- ARGV[1]  job hash prefix
-- ARGV[2]  events channel
-- ARGV[3]  cancelled history cap
-- ARGV[4..] four per child: id, queue, outcome ("ok", "failed",
--          "cancelled", "deleted"), reason
-- Returns: { children recorded now, repeats ignored, 1 when this call
--          completed the batch else 0, { ids of callbacks not released
--          because they were not waiting (cancelled or deleted by hand) } };
--          { -1, 0, 0, {} } when there is no such batch (it expired, or was
--          never written); an error reply, with nothing written, when a key
--          holds another type, a count in the batch is not a number, or a
--          callback cannot be read on this node now (TRYAGAIN: a slot
--          migration)

Q.prefix, Q.channel = ARGV[1], ARGV[2]
Q.pending, Q.stats, Q.cancelled = KEYS[3], KEYS[4], KEYS[5]
Q.outbox, Q.entries = KEYS[6], KEYS[7]
Q.failed_cap = tonumber(ARGV[3])
local key, settled = KEYS[1], KEYS[2]
local OUTCOMES = { ok = true, failed = true, cancelled = true, deleted = true }
-- Most failures the summary lists, and the longest reason it keeps.
local MAX_LISTED, MAX_REASON = 1000, 256

expect(settled, 'hash')
expect(Q.pending, 'list')
expect(Q.stats, 'hash')
expect_ends()
local kind, b = read_job(key, 'id', 'state', 'total', 'on_complete', 'on_success', 'keep_s', 'queue',
  'succeeded', 'failed')
if kind == 'none' then
  return { -1, 0, 0, {} }
elseif kind ~= 'hash' then
  return redis.error_reply('ERR batch_record: ' .. key .. ' cannot be read as a batch (' .. tostring(kind) ..
    '); nothing written')
end
local total = integer(b[3], 1, MAX_COUNT)
if not total then
  return redis.error_reply('ERR batch_record: ' .. key .. ': ' .. malformed('total', b[3], 1, MAX_COUNT) ..
    '; nothing written')
end
for i, field in ipairs({ 'succeeded', 'failed' }) do
  if not integer(b[7 + i], 0, MAX_COUNT) then
    return redis.error_reply('ERR batch_record: ' .. key .. ': ' .. malformed(field, b[7 + i], 0, MAX_COUNT) ..
      '; nothing written')
  end
end
local entries = {}
for at = 4, #ARGV - 3, 4 do
  local outcome = ARGV[at + 2]
  if not OUTCOMES[outcome] then
    return redis.error_reply('ERR batch_record: unknown outcome "' .. tostring(outcome) .. '"; nothing written')
  end
  entries[#entries + 1] = { ARGV[at + 1] .. '/' .. ARGV[at], outcome .. '\t' .. ARGV[at + 1] .. '\t' .. ARGV[at + 3],
    outcome == 'ok' }
end
-- The callbacks, read now: released only from "waiting"; one that is not
-- (cancelled or deleted by hand) is named in the reply.
local callbacks, unreleased = {}, {}
for _, role in ipairs({ 'complete', 'success' }) do
  local cb = role == 'complete' and b[4] or b[5]
  if cb and cb ~= '' then
    local k, f = read_job(Q.prefix .. cb, 'status', 'payload', 'priority', 'rate_key')
    if k == 'elsewhere' then
      return redis.error_reply('TRYAGAIN batch_record: callback ' .. cb ..
        ' cannot be read on this node now (slot migration); nothing written')
    elseif k == 'hash' and f[1] == 'waiting' then
      callbacks[#callbacks + 1] = { role = role, id = cb, payload = f[2] or 'null', priority = f[3],
        rate_key = f[4] }
    else
      unreleased[#unreleased + 1] = cb
    end
  end
end

-- The writes.
local recorded, repeats, ok, bad = 0, 0, 0, 0
for _, e in ipairs(entries) do
  if redis.call('HSETNX', settled, e[1], e[2]) == 1 then
    recorded = recorded + 1
    if e[3] then
      ok = ok + 1
    else
      bad = bad + 1
    end
  else
    repeats = repeats + 1
  end
end
if ok > 0 then
  redis.call('HINCRBY', key, 'succeeded', ok)
end
if bad > 0 then
  redis.call('HINCRBY', key, 'failed', bad)
end
if b[2] == 'done' or redis.call('HLEN', settled) < total then
  return { recorded, repeats, 0, {} }
end

-- Every child is in: the batch is done, once.
local now = now_ms()
local all = redis.call('HGETALL', settled)
-- A reason cut to MAX_REASON bytes, never inside a UTF-8 sequence.
local function cut(reason)
  if #reason <= MAX_REASON then
    return reason
  end
  local n = MAX_REASON
  while n > 0 and string.byte(reason, n + 1) and string.byte(reason, n + 1) >= 0x80
      and string.byte(reason, n + 1) < 0xC0 do
    n = n - 1
  end
  return string.sub(reason, 1, n) .. '...'
end
local children, failures, succeeded, omitted = {}, {}, 0, 0
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  local outcome, queue, reason = string.match(value, '^([^\t]*)\t([^\t]*)\t(.*)$')
  outcome, queue, reason = outcome or 'failed', queue or '', reason or value
  local child = string.sub(field, #queue + 2)
  children[#children + 1] = cjson.encode(child)
  if outcome == 'ok' then
    succeeded = succeeded + 1
  elseif #failures < MAX_LISTED then
    failures[#failures + 1] = '{"id":' .. cjson.encode(child) .. ',"queue":' .. cjson.encode(queue) ..
      ',"outcome":' .. cjson.encode(outcome) .. ',"reason":' .. cjson.encode(cut(reason)) .. '}'
  else
    omitted = omitted + 1
  end
end
local failed = #children - succeeded
redis.call('HSET', key, 'state', 'done', 'done_at_ms', ms(now), 'succeeded', ms(succeeded),
  'failed', ms(failed))
local summary = '{"batch":' .. cjson.encode(b[1] or '') .. ',"queue":' .. cjson.encode(b[7] or '') ..
  ',"total":' .. ms(#children) .. ',"succeeded":' .. ms(succeeded) .. ',"failed":' .. ms(failed) ..
  ',"children":[' .. table.concat(children, ',') .. '],"failures":[' .. table.concat(failures, ',') ..
  '],"failures_omitted":' .. ms(omitted) .. ',"payload":'
for _, cb in ipairs(callbacks) do
  if cb.role == 'success' and failed > 0 then
    end_cancelled(cb.id, string.format('batch %s: %d of %d children did not succeed', b[1] or '', failed,
      #children), now, '', 'cancelled_total')
  else
    redis.call('HSET', Q.prefix .. cb.id, 'status', 'pending', 'payload', summary .. cb.payload .. '}',
      'released_at_ms', ms(now))
    make_ready(cb.id, cb.priority, cb.rate_key, false)
    count('enqueued_total', 1)
  end
end
local keep = integer(b[6], 1, MAX_TTL_S) or 7 * 24 * 3600
redis.call('EXPIRE', key, keep)
redis.call('EXPIRE', settled, keep)
return { recorded, repeats, 1, unreleased }
