-- cancel.lua: cancels one job.
--
-- A waiting job (pending or scheduled) ends at once as cancelled and never
-- runs. Its id leaves pending too, every entry of it, so that a reference
-- worker, which knows nothing of the cancelled state, cannot claim it (LREM
-- walks the whole pending list: O(N) in the jobs waiting). A job waiting
-- in another lane (its priority's or its rate key's, named by its hash and
-- derived from the pending key: the documented exception) leaves that too.
--
-- A running job gets a cancel request (cancel_requested_at_ms and
-- cancel_reason in its hash): the runner holding it learns it from its next
-- lease renewal and stops the run; whatever the run then reports, the
-- settle ends the job as cancelled, never retried, and so does the sweep if
-- the lease runs out first. A worker that renews no lease of ours (a
-- reference worker) never hears of it and completes or fails the job as
-- usual.
--
-- A finished job (completed, failed, cancelled) is left as it is.
--
-- KEYS[1]  job hash
-- KEYS[2]  pending list
-- KEYS[3]  scheduled sorted set
-- KEYS[4]  cancelled list
-- KEYS[5]  stats hash
-- KEYS[6]  outbox sorted set (ends of batch children and chain steps)
-- KEYS[7]  outbox entries hash
-- ARGV[1]  job id
-- ARGV[2]  the reason, stored as cancel_reason
-- ARGV[3]  events channel
-- ARGV[4]  cancelled history cap (the dead letters' cap)
-- ARGV[5]  job hash prefix (to delete the hashes of ids trimmed off the
--          cancelled history: the documented exception)
-- Returns: { outcome, status }: "cancelled" (it was waiting; status is the
--          one it had), "requested" (it is running; asked before or now),
--          "finished" (status: completed, failed or cancelled), "missing"
--          (no such job); an error reply, with nothing written, when the
--          hash cannot be read here (a cluster slot migration: try again)
--          or holds a status this library does not know

Q.prefix, Q.channel, Q.cancelled, Q.stats = ARGV[5], ARGV[3], KEYS[4], KEYS[5]
Q.failed_cap = tonumber(ARGV[4])
Q.pending = KEYS[2]
Q.outbox, Q.entries = KEYS[6], KEYS[7]
local key, id, reason = KEYS[1], ARGV[1], ARGV[2]
expect(KEYS[2], 'list')
expect(KEYS[3], 'zset')
expect_ends()
expect(Q.stats, 'hash')
local kind, f = read_job(key, 'status', 'cancel_requested_at_ms')
if kind == 'elsewhere' then
  return redis.error_reply('TRYAGAIN cancel: the job cannot be read on this node now (slot migration); nothing written')
elseif kind ~= 'hash' then
  return { 'missing', '' }
end
local status = f[1]
local now = now_ms()
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  return { 'finished', status }
elseif status == 'processing' then
  if not f[2] then
    redis.call('HSET', key, 'cancel_requested_at_ms', ms(now), 'cancel_reason', reason)
  end
  return { 'requested', status }
elseif status == 'pending' then
  unlist(id)
elseif status == 'scheduled' then
  redis.call('ZREM', KEYS[3], id)
elseif status == 'waiting' then
  -- A batch's callback, in no list: its batch will not release it.
else
  return redis.error_reply('ERR cancel: job ' .. id .. ' has status "' .. tostring(status) ..
    '", which this library does not know; nothing written')
end
end_cancelled(id, reason, now, '', 'cancelled_total')
return { 'cancelled', status }
