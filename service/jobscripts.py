"""The Lua scripts behind every job state change, so each change is one atomic Redis call.

Keys (prefix `st:`): `job:{id}` hash; `owner:{owner}` zset of ids by creation ms; `active:{owner}`
set of queued/in_progress ids; `queue:{model}` zset (queue position); `running` hash id->worker;
`worker:{worker}` heartbeat with a TTL; `expiry` zset id->expires_at; `stats:status` counts.
Every status change goes through `_set_status` so the counts and sets stay in step.
"""

from __future__ import annotations

PREFIX = "st:"

_SET_STATUS = """
local function set_status(id, from, to, now)
  local k = 'st:job:' .. id
  redis.call('HSET', k, 'status', to)
  redis.call('HINCRBY', 'st:stats:status', from, -1)
  redis.call('HINCRBY', 'st:stats:status', to, 1)
  local model = redis.call('HGET', k, 'model')
  if to ~= 'queued' then redis.call('ZREM', 'st:queue:' .. model, id) end
  if to == 'completed' or to == 'failed' then
    local owner = redis.call('HGET', k, 'owner')
    redis.call('SREM', 'st:active:' .. owner, id)
    redis.call('HDEL', 'st:running', id)
    redis.call('HSET', k, 'finished_at', now)
  end
  redis.call('PUBLISH', 'st:events:' .. id, to)
end
"""

# KEYS: none. ARGV: id, owner, created_ms, max_active, idem_key ('' = none), fingerprint,
# idem_ttl_s, field1, value1, ...  Returns {'created', id} | {'existing', id, fingerprint} | {'busy', n}
CREATE = """
local id, owner, created_ms = ARGV[1], ARGV[2], ARGV[3]
local max_active, idem, fp, ttl = tonumber(ARGV[4]), ARGV[5], ARGV[6], tonumber(ARGV[7])
if idem ~= '' then
  local prior = redis.call('GET', idem)
  if prior then
    local sep = string.find(prior, '|', 1, true)
    return {'existing', string.sub(prior, 1, sep - 1), string.sub(prior, sep + 1)}
  end
end
local active = redis.call('SCARD', 'st:active:' .. owner)
if active >= max_active then return {'busy', tostring(active)} end
local k = 'st:job:' .. id
for i = 8, #ARGV, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', k, 'status', 'queued', 'owner', owner, 'created_ms', created_ms)
redis.call('ZADD', 'st:owner:' .. owner, created_ms, id)
redis.call('SADD', 'st:active:' .. owner, id)
redis.call('ZADD', 'st:queue:' .. redis.call('HGET', k, 'model'), created_ms, id)
redis.call('HINCRBY', 'st:stats:status', 'queued', 1)
if idem ~= '' then redis.call('SET', idem, id .. '|' .. fp, 'EX', ttl) end
return {'created', id}
"""

# ARGV: id, now, code, message. A queued job fails at once (it never runs); a running one
# gets a flag its worker reads at the next denoising step.
# Returns 'missing' | 'cancelled' | 'requested' | <final status>
CANCEL = _SET_STATUS + """
local id, now = ARGV[1], ARGV[2]
local k = 'st:job:' .. id
local st = redis.call('HGET', k, 'status')
if not st then return 'missing' end
if st == 'queued' then
  redis.call('HSET', k, 'cancel_requested', '1', 'error_code', ARGV[3], 'error_message', ARGV[4])
  set_status(id, st, 'failed', now)
  return 'cancelled'
end
if st == 'in_progress' then
  redis.call('HSET', k, 'cancel_requested', '1')
  redis.call('PUBLISH', 'st:events:' .. id, 'cancel')
  return 'requested'
end
return st
"""

# ARGV: id. Removes the record and every index entry; a running worker sees the record gone
# at its next step and stops. Returns the removed record's asset keys (flat list) or 'missing'.
DELETE = """
local id = ARGV[1]
local k = 'st:job:' .. id
local st = redis.call('HGET', k, 'status')
if not st then return 'missing' end
local owner, model = redis.call('HGET', k, 'owner'), redis.call('HGET', k, 'model')
redis.call('HINCRBY', 'st:stats:status', st, -1)
redis.call('ZREM', 'st:owner:' .. owner, id)
redis.call('SREM', 'st:active:' .. owner, id)
redis.call('ZREM', 'st:queue:' .. model, id)
redis.call('HDEL', 'st:running', id)
redis.call('ZREM', 'st:expiry', id)
redis.call('DEL', k)
redis.call('PUBLISH', 'st:events:' .. id, 'deleted')
return 'deleted'
"""

# ARGV: id, worker, now_s, max_attempts, now_ms.
# Returns {'claimed', attempts} | {'missing'} | {'done'} | {'cancelled'} | {'busy', worker} | {'exhausted', attempts}
CLAIM = _SET_STATUS + """
local id, worker, now, max_attempts = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local k = 'st:job:' .. id
local st = redis.call('HGET', k, 'status')
if not st then return {'missing'} end
if st == 'completed' or st == 'failed' then return {'done'} end
if redis.call('HGET', k, 'cancel_requested') == '1' then
  redis.call('HSET', k, 'error_code', 'cancelled', 'error_message', 'The video was cancelled.')
  set_status(id, st, 'failed', now)
  return {'cancelled'}
end
local holder = redis.call('HGET', 'st:running', id)
-- A live holder keeps its job, this very worker included: its run may still be finishing in the
-- background (the encode overlap), or the job joined one of its batches (BATCH_CLAIM).
if st == 'in_progress' and holder and redis.call('EXISTS', 'st:worker:' .. holder) == 1 then
  return {'busy', holder}
end
local attempts = redis.call('HINCRBY', k, 'attempts', 1)
if attempts > max_attempts then
  redis.call('HSET', k, 'error_code', 'worker_lost',
    'error_message', 'Gave up after ' .. max_attempts .. ' attempts: the worker running this video was lost each time.')
  set_status(id, st, 'failed', now)
  return {'exhausted', tostring(attempts)}
end
redis.call('HSET', k, 'started_at', now, 'started_ms', ARGV[5], 'worker', worker, 'progress', '0')
redis.call('HSET', 'st:running', id, worker)
if st ~= 'in_progress' then set_status(id, st, 'in_progress', now)
else redis.call('PUBLISH', 'st:events:' .. id, 'in_progress') end
return {'claimed', tostring(attempts)}
"""

# ARGV: leader id, worker, now_s, max_attempts, now_ms, max_jobs, window, field1, field2, ...
# Claims for `worker`, as CLAIM would, up to max_jobs other queued jobs of the leader's model whose
# fields equal the leader's (the clip's shape), oldest first among the first `window` of the queue,
# to run in one batch with it. A claimed job's own message later finds it held (busy) or done.
# Returns the claimed ids.
BATCH_CLAIM = _SET_STATUS + """
local leader, worker, now, max_attempts, now_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local max_jobs, window = tonumber(ARGV[6]), tonumber(ARGV[7])
local lk = 'st:job:' .. leader
local model = redis.call('HGET', lk, 'model')
local claimed = {}
if not model or max_jobs < 1 then return claimed end
for _, id in ipairs(redis.call('ZRANGE', 'st:queue:' .. model, 0, window - 1)) do
  if #claimed >= max_jobs then break end
  local k = 'st:job:' .. id
  local alike = id ~= leader and redis.call('HGET', k, 'status') == 'queued'
    and redis.call('HGET', k, 'cancel_requested') ~= '1'
    and tonumber(redis.call('HGET', k, 'attempts') or '0') < max_attempts
  for i = 8, #ARGV do
    if not alike then break end
    alike = redis.call('HGET', k, ARGV[i]) == redis.call('HGET', lk, ARGV[i])
  end
  if alike then
    redis.call('HINCRBY', k, 'attempts', 1)
    redis.call('HSET', k, 'started_at', now, 'started_ms', now_ms, 'worker', worker, 'progress', '0')
    redis.call('HSET', 'st:running', id, worker)
    set_status(id, 'queued', 'in_progress', now)
    table.insert(claimed, id)
  end
end
return claimed
"""

# ARGV: id, progress, worker. Returns 1 to go on; 0 to stop (cancelled or deleted); 2 when this
# worker no longer holds the job (its heartbeat lapsed and the job went to another worker).
PROGRESS = """
local k = 'st:job:' .. ARGV[1]
if redis.call('EXISTS', k) == 0 then return 0 end
if redis.call('HGET', k, 'cancel_requested') == '1' then return 0 end
if redis.call('HGET', k, 'status') ~= 'in_progress' or redis.call('HGET', k, 'worker') ~= ARGV[3] then return 2 end
redis.call('HSET', k, 'progress', ARGV[2])
redis.call('PUBLISH', 'st:events:' .. ARGV[1], 'progress')
return 1
"""

# ARGV: id, to ('completed' | 'failed'), now, expires_at ('' = none), worker, field1, value1, ...
# Only the worker holding an in_progress job finishes it. A cancel requested before completion
# (while the video was being encoded and stored) wins: the job fails as cancelled and the worker
# removes the files it stored.
# Returns 'ok' | 'cancelled' | 'missing' | 'superseded' | <current status>
FINISH = _SET_STATUS + """
local id, to, now, expires_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = 'st:job:' .. id
local st = redis.call('HGET', k, 'status')
if not st then return 'missing' end
if st ~= 'in_progress' then return st end
if redis.call('HGET', k, 'worker') ~= ARGV[5] then return 'superseded' end
if to == 'completed' and redis.call('HGET', k, 'cancel_requested') == '1' then
  redis.call('HSET', k, 'error_code', 'cancelled', 'error_message', 'The video was cancelled.', 'completed_at', now)
  set_status(id, st, 'failed', now)
  return 'cancelled'
end
for i = 6, #ARGV, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', k, 'completed_at', now)
if expires_at ~= '' then
  redis.call('HSET', k, 'expires_at', expires_at)
  redis.call('ZADD', 'st:expiry', expires_at, id)
end
set_status(id, st, to, now)
return 'ok'
"""

# ARGV: id, worker, now, code, message. Fails a job whose run by `worker` (a pool process the
# hard time limit killed) cannot finish it: while that worker still holds it in_progress, or after
# the reaper requeued it from that worker and before anyone claimed it again (the record's
# `worker` is still the killed one). A cancel requested meanwhile wins: it fails as `cancelled`.
# Returns 'ok' | 'missing' | 'superseded' | <current status>
FAIL_KILLED = _SET_STATUS + """
local id, worker, now = ARGV[1], ARGV[2], ARGV[3]
local k = 'st:job:' .. id
local st = redis.call('HGET', k, 'status')
if not st then return 'missing' end
if st ~= 'in_progress' and st ~= 'queued' then return st end
if redis.call('HGET', k, 'worker') ~= worker then return 'superseded' end
local code, message = ARGV[4], ARGV[5]
if redis.call('HGET', k, 'cancel_requested') == '1' then code, message = 'cancelled', 'The video was cancelled.' end
redis.call('HSET', k, 'error_code', code, 'error_message', message, 'completed_at', now)
set_status(id, st, 'failed', now)
return 'ok'
"""

# ARGV: id, dead worker. Puts a job whose worker stopped heartbeating back in the queue.
# Returns 1 when requeued.
REQUEUE = _SET_STATUS + """
local id, dead = ARGV[1], ARGV[2]
local k = 'st:job:' .. id
if redis.call('HGET', 'st:running', id) ~= dead then return 0 end
if redis.call('EXISTS', 'st:worker:' .. dead) == 1 then return 0 end
redis.call('HDEL', 'st:running', id)
local st = redis.call('HGET', k, 'status')
if st ~= 'in_progress' then return 0 end
redis.call('HSET', k, 'progress', '0')
redis.call('ZADD', 'st:queue:' .. redis.call('HGET', k, 'model'), redis.call('HGET', k, 'created_ms'), id)
set_status(id, st, 'queued', '')
return 1
"""

# read(id) -> the record as a flat field/value list followed by its queue position (-1 when not
# queued), or {} when missing.
_READ_FN = """
local function read(id)
  local k = 'st:job:' .. id
  local record = redis.call('HGETALL', k)
  if #record == 0 then return record end
  local position = -1
  if redis.call('HGET', k, 'status') == 'queued' then
    position = redis.call('ZRANK', 'st:queue:' .. redis.call('HGET', k, 'model'), id) or -1
  end
  table.insert(record, position)
  return record
end
"""


def poll_script(authorize_fn: str) -> str:
    """A status poll in one round trip: ARGV = authorize's five, then the job id.
    Returns {owner, retry_after} when refused, else {owner, '0', <read(id)>...}."""
    return authorize_fn + _READ_FN + """
local owner, retry = authorize(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if owner == '' or retry ~= '0' then return {owner, retry} end
local out = {owner, retry}
for _, v in ipairs(read(ARGV[6])) do table.insert(out, v) end
return out
"""
